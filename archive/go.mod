module github.com/tapline/tapline/archive

go 1.26.8
