package reassemble

import (
	"testing"
	"time"

	"github.com/tapline/tapline/proto/framebatch"
)

// TestSeqJumpFloodEngine: 3000 segments of 8000 bytes, 16 MiB apart in
// sequence space, on one connection whose handshake was seen (no window
// scaling). It used to be reported as about 48 GiB of mirror loss from
// 24 MB sent; every jump is now a close with reason seq_jump, the bytes
// sent are all published, and nothing is reported missing.
func TestSeqJumpFloodEngine(t *testing.T) {
	const n, size, spacing = 3000, 8000, 16 << 20
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	startEngine(t, testConfig(url, 2, "flood"))
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(t, "10.9.0.1:51000", "10.9.0.2:443", 5, &clock)
	b := newBatcher(t, js, 100)
	send := func(f framebatch.Frame) { b.add(&f, shardOf(t, &f, 2)) }
	send(c.frame(true, "S", nil))
	send(c.frame(false, "SA", nil))
	data := pattern(size, 3)
	isn := c.seq[0]
	for i := 0; i < n; i++ {
		c.seq[0] = isn + uint32(i*spacing)
		clock += int64(time.Millisecond)
		send(c.frame(true, "PA", data))
	}
	b.flush()
	// The last connection closes idle (2 s of capture time, advanced by
	// the wall clock).
	waitFor(t, "every byte sent closed", func() bool {
		var seen int64
		for _, co := range col.closed() {
			seen += co.closeEv.C2S.BytesSeen + co.closeEv.S2C.BytesSeen
		}
		return seen >= n*size
	})
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	var seen, missing, gapBytes int64
	jumps := 0
	for _, co := range col.closed2() {
		for _, l := range []int64{co.closeEv.C2S.BytesMissing, co.closeEv.S2C.BytesMissing} {
			missing += l
		}
		seen += co.closeEv.C2S.BytesSeen + co.closeEv.S2C.BytesSeen
		for _, g := range co.gaps {
			gapBytes += g.Bytes
		}
		if co.closeEv.Reason == "seq_jump" {
			jumps++
		}
	}
	if seen != n*size || missing != 0 || gapBytes != 0 || jumps != n-1 {
		t.Fatalf("%d bytes seen (sent %d), %d missing, %d in gap events, %d seq_jump closes", seen, n*size, missing, gapBytes, jumps)
	}
}
