package keys

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestBufferBoundedWhileNATSAway: following a large key log while NATS is
// unreachable reads only --buffer-bytes ahead (the file holds the rest), so
// memory stays within the buffer plus one batch being built, whatever the
// file's size. The margin (3x the buffer) covers the read buffer, batch
// slack and the runtime.
func TestBufferBoundedWhileNATSAway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keylog")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	const total = 200000 // about 40 MB
	for i := range total {
		w.WriteString(keyLine("mem", i))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	cfg := testConfig("nats://127.0.0.1:1", path)
	cfg.Follow, cfg.Provision = true, false
	s := start(t, cfg)
	// Wait until reading has stopped at the bound.
	last, still := -1.0, 0
	for still < 10 {
		time.Sleep(50 * time.Millisecond)
		if !hasCounter(s.reg, "tapline_keys_lines_read_total") {
			continue
		}
		n := counter(t, s.reg, "tapline_keys_lines_read_total")
		if n == last && n > 0 {
			still++
		} else {
			still, last = 0, n
		}
	}
	if last >= total {
		t.Fatalf("read all %v lines with NATS away: not bounded by --buffer-bytes", last)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if limit := int64(3 * cfg.BufferBytes); grew > limit {
		t.Fatalf("heap grew %d bytes following a 40 MB key log with NATS away, bound %d", grew, limit)
	}
	t.Logf("read %v of %d lines ahead; heap grew %d KiB (buffer %d KiB)", last, total, grew>>10, cfg.BufferBytes>>10)
}
