package pmd

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/klauspost/compress/flate"
)

// TestFlateReaderCost checks that FlateReaderCost covers what a deflate
// reader really holds (measured over many readers, after GC).
func TestFlateReaderCost(t *testing.T) {
	const n = 200
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	rs := make([]any, n)
	for i := range rs {
		rs[i] = flate.NewReader(bytes.NewReader(nil))
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := (int64(ms.HeapAlloc) - int64(before)) / n
	runtime.KeepAlive(rs)
	t.Logf("flate reader: %d bytes", per)
	if per > FlateReaderCost {
		t.Fatalf("a flate reader holds %d bytes, FlateReaderCost is %d", per, FlateReaderCost)
	}
}
