module example.com/gosites

go 1.21
