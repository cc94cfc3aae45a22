module gotypehash

go 1.21
