module github.com/tapline/tapline/allinone

go 1.26.8

require (
	github.com/tapline/tapline/archive v0.0.0
	github.com/tapline/tapline/decap v0.0.0
	github.com/tapline/tapline/proto v0.0.0
	github.com/tapline/tapline/reassemble v0.0.0
	github.com/tapline/tapline/replay v0.0.0
)

replace (
	github.com/tapline/tapline/archive => ../archive
	github.com/tapline/tapline/decap => ../decap
	github.com/tapline/tapline/proto => ../proto
	github.com/tapline/tapline/reassemble => ../reassemble
	github.com/tapline/tapline/replay => ../replay
)
