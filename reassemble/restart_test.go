package reassemble

import (
	"context"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
)

// TestRecoveryRestartMidMessage (issue 17): the only instance dies in the
// middle of a large WebSocket message while new frames keep arriving, and
// a new process starts. New batches reach the new owner before the dead
// owner's held (unacknowledged) ones come back, which happens only after
// their ack wait. The connection must be rebuilt from its first held
// batch: one connection, still a WebSocket (not a mid-stream TCP one),
// every message exact, no gap (nothing was lost), each entry stored once.
func TestRecoveryRestartMidMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	// Held: more than the connection holds at the crash, less than it and
	// the new batches. As in production (15 s, 30 s): the dead owner's pin
	// ends before its held batches' ack wait, so new batches reach the new
	// owner first.
	f := newRestartFixture(t, "restart", 600, 2*time.Second, 6*time.Second)
	f.cfg.NewDecoder = nil // the WebSocket decoder
	js, col, cfg := f.js, f.col, f.cfg
	c := newSynthConn(t, "10.2.0.1:40017", "10.2.0.2:443", 7, &f.clock)
	msgs := [][]byte{pattern(20000, 1), pattern(2<<20, 2), pattern(5000, 3), pattern(7000, 4), pattern(9000, 5)}
	var s2c []byte
	msg2 := 0
	for i, m := range msgs {
		if i == 1 {
			msg2 = len(s2c)
		}
		s2c = append(s2c, wsFrame(2, m, false)...)
	}
	batches := [][]byte{
		frameBatch(t, c.frame(true, "S", nil), c.frame(false, "SA", nil)),
		frameBatch(t, c.frame(true, "PA", []byte(upgradeReq)), c.frame(false, "PA", []byte(upgradeResp))),
	}
	crashAt := 0 // first batch not published before the crash: the middle of message 2
	const seg = 1000
	for off := 0; off < len(s2c); off += 2 * seg {
		if crashAt == 0 && off >= msg2+len(msgs[1])/2 {
			crashAt = len(batches)
		}
		a := s2c[off:min(off+seg, len(s2c))]
		if off+seg >= len(s2c) {
			batches = append(batches, frameBatch(t, c.frame(false, "PA", a)))
			continue
		}
		b := s2c[off+seg : min(off+2*seg, len(s2c))]
		batches = append(batches, frameBatch(t, c.frame(false, "PA", a), c.frame(false, "PA", b)))
	}
	batches = append(batches, frameBatch(t, c.frame(false, "FA", nil), c.frame(true, "FA", nil)))
	f.batches = batches
	pub := f.pub
	for i := range crashAt {
		pub(i)
	}
	crash := startEngine(t, cfg)
	waitFor(t, "message 1", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		for _, c := range col.conns {
			if len(c.msgs[proto.ServerToClient]) > 0 {
				return true
			}
		}
		return false
	})
	waitFor(t, "every published batch delivered", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, proto.FramesStream, cfg.Consumer+"-0")
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.Delivered.Stream >= uint64(crashAt)
	})
	time.Sleep(500 * time.Millisecond) // processed and held
	crash()

	// The restarted process; new frames keep coming, through the pinned
	// TTL and the held batches' ack wait.
	done := make(chan struct{})
	go func() {
		defer close(done)
		rest := len(batches) - crashAt
		pace := (cfg.PinnedTTL + 2*cfg.AckWait) / time.Duration(rest)
		for i := crashAt; i < len(batches); i++ {
			pub(i)
			time.Sleep(pace)
		}
	}()
	startEngine(t, f.restarted())
	<-done
	waitFor(t, "the connection to close", func() bool { return len(col.closed()) >= 1 })
	time.Sleep(500 * time.Millisecond) // a second connection's close, if any

	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	if len(col.conns) != 1 {
		for _, c := range col.conns {
			t.Logf("%s: open %+v close %+v", c.id, c.open, c.closeEv)
		}
		t.Errorf("%d connections, want 1", len(col.conns))
	}
	for _, oc := range col.conns {
		if oc.open == nil || oc.open.Protocol != "websocket" || oc.open.MidStream {
			t.Errorf("%s: open %+v, want a WebSocket connection seen from its start", oc.id, oc.open)
		}
		for _, g := range oc.gaps {
			t.Errorf("%s: gap %+v reported, but no frame was lost", oc.id, g)
		}
		for id, n := range oc.chunks {
			if n != 1 {
				t.Errorf("chunk %s stored %d times", id, n)
			}
		}
		checkMessages(t, oc, proto.ServerToClient, msgs, 0)
		if oc.closeEv == nil || oc.closeEv.Reason != "fin" {
			t.Errorf("%s: close %+v", oc.id, oc.closeEv)
		}
	}
}
