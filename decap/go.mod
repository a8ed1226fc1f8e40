module github.com/tapline/tapline/decap

go 1.26.8
