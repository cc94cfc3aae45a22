module example.com/goscenarios

go 1.21
