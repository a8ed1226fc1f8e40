package reassemble

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// TestRecoverySlowRedelivery: a dead owner held 2000 batches of one
// connection, the later half of which are redelivered first (the earlier
// half had a later in-progress ack), and the new owner receives them
// slowly (a busy machine: a pause before every fetch), so the
// redeliveries keep arriving for longer than the ack wait plus 5 s. The
// recovery must not end while they are still coming: ending it processed
// the later half alone — the connection started mid-stream, without its
// SYN and handshake — and the earlier half after it as another connection.
func TestRecoverySlowRedelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	cfg := recoveryConfig(url)
	cfg.PinnedTTL, cfg.AckWait = 2*time.Second, 3*time.Second

	// The consumer as the stage creates it; the instance that made it is
	// gone before any batch exists.
	cfgA := cfg
	cfgA.InstanceID, cfgA.crashOnStop = "gone", true
	stopA := startEngine(t, cfgA)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := cfg.Consumer + "-0"
	waitFor(t, "the consumer", func() bool { _, err := js.Consumer(ctx, proto.FramesStream, name); return err == nil })
	stopA()

	clock := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(t, "10.4.0.1:40019", "10.4.0.2:443", 7, &clock)
	const n = 2000
	var want []byte
	batches := [][]byte{frameBatch(t, c.frame(true, "S", nil)), frameBatch(t, c.frame(false, "SA", nil))}
	for i := 2; i < n; i++ {
		p := pattern(500, byte(i))
		want = append(want, p...)
		batches = append(batches, frameBatch(t, c.frame(false, "PA", p)))
	}
	fin := frameBatch(t, c.frame(false, "FA", nil), c.frame(true, "FA", nil))
	for i, b := range batches {
		if _, err := js.Publish(ctx, proto.FramesSubject(7, 0), b, jetstream.WithMsgID(fmt.Sprintf("slow-%d", i))); err != nil {
			t.Fatal(err)
		}
	}

	// The owner that dies: it takes every batch (once the gone
	// instance's pin has ended) and acknowledges none.
	time.Sleep(cfg.PinnedTTL + time.Second)
	cons, err := js.Consumer(ctx, proto.FramesStream, name)
	if err != nil {
		t.Fatal(err)
	}
	var held []jetstream.Msg
	for len(held) < n {
		mb, err := cons.Fetch(pullBatches, jetstream.FetchMaxWait(time.Second), jetstream.FetchPriorityGroup(priorityGroup))
		if err != nil {
			t.Fatal(err)
		}
		for m := range mb.Messages() {
			held = append(held, m)
		}
	}
	// The earlier half gets a later in-progress ack: it is redelivered
	// after the later half.
	time.Sleep(cfg.AckWait / 2)
	for _, m := range held[:n/2] {
		_ = m.InProgress()
	}
	time.Sleep(cfg.AckWait + cfg.PinnedTTL) // all due, its pin ended

	cfgB := cfg
	cfgB.InstanceID = "slow"
	cfgB.fetchDelay = 600 * time.Millisecond // 1000 batches: about 10 s
	startEngine(t, cfgB)
	if _, err := js.Publish(ctx, proto.FramesSubject(7, 0), fin, jetstream.WithMsgID("slow-fin")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connection to close", func() bool { return len(col.closed()) >= 1 })
	time.Sleep(500 * time.Millisecond) // a second connection, if any

	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	if len(col.conns) != 1 {
		for _, oc := range col.conns {
			t.Logf("%s: open %+v close %+v, %d bytes", oc.id, oc.open, oc.closeEv, oc.bytes[proto.ServerToClient])
		}
		t.Fatalf("%d connections, want 1 rebuilt from its first packet", len(col.conns))
	}
	for _, oc := range col.conns {
		if oc.open == nil || oc.open.MidStream {
			t.Errorf("%s: open %+v, want the connection seen from its start", oc.id, oc.open)
		}
		for _, g := range oc.gaps {
			t.Errorf("%s: gap %+v reported, but no frame was lost", oc.id, g)
		}
		if got := oc.body[proto.ServerToClient]; string(got) != string(want) {
			t.Errorf("%s: %d bytes, want %d exact", oc.id, len(got), len(want))
		}
	}
}
