module github.com/tapline/tapline/reassemble

go 1.26.8
