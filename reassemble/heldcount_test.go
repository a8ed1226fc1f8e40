package reassemble

import (
	"fmt"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
)

// TestHeldBatchesCountedOnce: --max-held-batches bounds the distinct
// batches a shard keeps unacknowledged (what the consumer's MaxAckPending
// bounds). Eight open connections whose frames share 130 batches, then
// have 10 batches each to themselves, hold 210 batches — under the limit
// of 250 — but 8 × 140 connection-batch pairs. Counting the pairs made the
// stage give up holding for seven of them: their own batches were
// acknowledged, and after a restart their streams had holes (reported as
// loss, though nothing was lost) or started mid-stream. Here the only
// instance dies and a new one starts: every connection is rebuilt from its
// first packet, exact, nothing stops holding.
func TestHeldBatchesCountedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	f := newRestartFixture(t, "held", 250, 2*time.Second, 4*time.Second)
	col, cfg, clock := f.col, f.cfg, &f.clock
	const nconns, rounds = 8, 128
	conns := make([]*synthConn, nconns)
	want := make([][]byte, nconns)
	for i := range conns {
		conns[i] = newSynthConn(t, fmt.Sprintf("10.3.0.1:%d", 41000+i), "10.3.0.2:443", 7, clock)
	}
	each := func(f func(i int, c *synthConn) framebatch.Frame) []byte {
		var fs []framebatch.Frame
		for i, c := range conns {
			fs = append(fs, f(i, c))
		}
		return frameBatch(t, fs...)
	}
	var batches [][]byte
	batches = append(batches, each(func(_ int, c *synthConn) framebatch.Frame { return c.frame(true, "S", nil) }))
	batches = append(batches, each(func(_ int, c *synthConn) framebatch.Frame { return c.frame(false, "SA", nil) }))
	for r := range rounds {
		batches = append(batches, each(func(i int, c *synthConn) framebatch.Frame {
			p := pattern(500, byte(r*nconns+i))
			want[i] = append(want[i], p...)
			return c.frame(false, "PA", p)
		}))
	}
	// Then each connection alone in its batches: what a connection that
	// stopped holding has acknowledged is missing after the restart.
	for r := range 10 {
		for i, c := range conns {
			p := pattern(700, byte(100+r*nconns+i))
			want[i] = append(want[i], p...)
			batches = append(batches, frameBatch(t, c.frame(false, "PA", p)))
		}
	}
	before := len(batches)
	batches = append(batches, each(func(_ int, c *synthConn) framebatch.Frame { return c.frame(false, "FA", nil) }))
	batches = append(batches, each(func(_ int, c *synthConn) framebatch.Frame { return c.frame(true, "FA", nil) }))
	f.batches = batches
	pub := f.pub
	for i := range before {
		pub(i)
	}
	crash, reg := startEngineReg(t, cfg)
	waitFor(t, "every batch processed and its data published", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		n := int64(0)
		for _, c := range col.conns {
			n += c.bytes[proto.ServerToClient]
		}
		return n == int64(nconns*(rounds*500+10*700))
	})
	if n := metricValue(t, reg, "tapline_reassemble_unreplayable_connections_total", nil); n != 0 {
		t.Errorf("%v connections stopped holding with %d distinct batches held, under --max-held-batches %d", n, before, cfg.MaxHeldBatches)
	}
	time.Sleep(300 * time.Millisecond)
	crash()

	startEngine(t, f.restarted())
	for i := before; i < len(batches); i++ {
		pub(i)
	}
	waitFor(t, "every connection to close", func() bool { return len(col.closed()) >= nconns })
	time.Sleep(500 * time.Millisecond) // further connections, if any
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	if len(col.conns) != nconns {
		t.Errorf("%d connections, want %d (each rebuilt from its first packet)", len(col.conns), nconns)
	}
	for _, oc := range col.conns {
		if oc.open == nil || oc.open.MidStream {
			t.Errorf("%s: open %+v, want a connection seen from its start", oc.id, oc.open)
		}
		for _, g := range oc.gaps {
			t.Errorf("%s: gap %+v reported, but no frame was lost", oc.id, g)
		}
		if oc.closeEv == nil || oc.closeEv.Reason != "fin" {
			t.Errorf("%s: close %+v", oc.id, oc.closeEv)
		}
	}
	for i := range conns {
		id := ""
		for _, oc := range col.conns {
			if oc.open != nil && oc.open.Client == conns[i].cli.String() {
				id = oc.id
			}
		}
		if id == "" {
			t.Errorf("connection %d: no open event", i)
			continue
		}
		if got := col.conns[id].body[proto.ServerToClient]; string(got) != string(want[i]) {
			t.Errorf("connection %d: %d bytes, want %d exact", i, len(got), len(want[i]))
		}
	}
}
