module github.com/tapline/tapline/replay

go 1.26.8
