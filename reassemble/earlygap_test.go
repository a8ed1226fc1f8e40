package reassemble

import (
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/reassemble/message"
)

// silentDecoder never emits anything by itself: the connection's open
// event is the reassembler's to publish.
type silentDecoder struct{}

func (silentDecoder) Data(proto.Direction, []byte, int64) {}
func (silentDecoder) Gap(proto.Direction, int64, int64)   {}
func (silentDecoder) Close(int64)                         {}
func (silentDecoder) Stats(proto.Direction) message.Stats { return message.Stats{} }
func newSilentDecoder(message.Meta, message.Output, message.Limits) message.Decoder {
	return silentDecoder{}
}

// TestEarlyGapsBounded: gap events held for a connection's open event are
// bounded: a connection whose decoder has not opened after maxEarlyGaps
// gaps is opened, and its gaps published after the open event, while the
// connection is still open (before, every gap waited for the close; and
// before that, they were published ahead of the open event).
func TestEarlyGapsBounded(t *testing.T) {
	_, url := natstestRun(t)
	_, js := connect(t, url)
	l := logKinds(t, js)
	cfg := testConfig(url, 2, "earlygaps")
	cfg.NewDecoder = newSilentDecoder
	cfg.ReorderWindow = 4096
	cfg.IdleTimeout = 10 * time.Minute // the connection stays open
	startEngine(t, cfg)
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(t, "10.9.0.1:51000", "10.9.0.2:8080", 5, &clock)
	b := newBatcher(t, js, 4)
	send := func(f framebatch.Frame) { b.add(&f, shardOf(t, &f, 2)) }
	send(c.frame(true, "S", nil))
	send(c.frame(false, "SA", nil))
	isn := c.seq[0]
	const seg, n = 5000, 2*maxEarlyGaps + 8
	for i := 0; i < n; i += 2 { // every other segment lost: a gap each
		c.seq[0] = isn + uint32(i*seg)
		send(c.frame(true, "PA", pattern(seg, byte(i))))
	}
	b.flush()
	waitFor(t, "the open event and more than maxEarlyGaps gaps", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, ks := range l.kinds {
			return len(ks) > maxEarlyGaps+1
		}
		return false
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.kinds) != 1 {
		t.Fatalf("%d connections, want 1", len(l.kinds))
	}
	for id, ks := range l.kinds {
		if ks[0] != string(proto.KindOpen) {
			t.Errorf("%s: first entry %s, want open", id, ks[0])
		}
		for i, k := range ks[1:] {
			if k != string(proto.KindGap) {
				t.Errorf("%s: entry %d is %s, want gap", id, i+1, k)
			}
		}
	}
}
