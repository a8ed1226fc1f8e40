module github.com/tapline/tapline/allinone

go 1.26.8
