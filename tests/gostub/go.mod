module example.com/gostub

go 1.21
