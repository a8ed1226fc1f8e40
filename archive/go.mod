module github.com/tapline/tapline/archive

go 1.26.8

require github.com/tapline/tapline/proto v0.0.0

replace github.com/tapline/tapline/proto => ../proto
