package reassemble

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
)

// frameBatch is one frame batch as decap publishes it.
func frameBatch(t *testing.T, fs ...framebatch.Frame) []byte {
	t.Helper()
	var w framebatch.Writer
	for i := range fs {
		w.Add(&fs[i])
	}
	return append([]byte(nil), w.Bytes()...)
}

// recoveryConfig is a one-shard configuration whose reorder window is
// small: a batch processed out of its place makes a gap at once.
func recoveryConfig(url string) Config {
	cfg := testConfig(url, 1, "instance-r")
	cfg.AckWait = 3 * time.Second
	cfg.PinnedTTL = 5 * time.Second
	cfg.ReorderWindow = 4 << 10
	cfg.IdleTimeout = time.Hour
	return cfg
}

// checkExact asserts that the collector holds one connection whose
// server-to-client stream is want, closed by FIN with no gap.
func checkExact(t *testing.T, col *collector, want []byte) {
	t.Helper()
	waitFor(t, "the connection to close", func() bool { return len(col.closed()) >= 1 })
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	if len(col.conns) != 1 {
		t.Errorf("%d connections, want 1", len(col.conns))
	}
	for _, c := range col.conns {
		for _, g := range c.gaps {
			t.Errorf("%s: gap %+v reported, but no frame was lost", c.id, g)
		}
		if c.closeEv == nil || c.closeEv.Reason != "fin" || c.incomplete != 0 || c.closeEv.S2C.BytesMissing != 0 {
			t.Errorf("%s: close %+v, %d incomplete", c.id, c.closeEv, c.incomplete)
		}
		if got := c.body[proto.ServerToClient]; !bytes.Equal(got, want) {
			t.Errorf("%s: server stream %d B, want %d B exact; first difference at offset %d; %d chunks stored out of order",
				c.id, len(got), len(want), firstDiff(got, want), c.reordered)
		}
	}
}

// TestRecoveryRedeliveredFirst: a previous owner of the shard took the
// first two batches of a connection and left them unacknowledged; the
// first is redelivered at once (it was negatively acknowledged), the
// second only after its ack wait. The new owner's first delivery is thus a
// redelivery, followed by new batches. It must not process the new batches
// before the second batch is back (that reported its bytes as mirror
// loss): every pending delivery has to reach it first.
func TestRecoveryRedeliveredFirst(t *testing.T) {
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	cfg := recoveryConfig(url)

	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(t, "10.2.0.1:40001", "10.2.0.2:9000", 7, &clock)
	b := newBatcher(t, js, 2)
	send := func(fromClient bool, flags string, payload []byte) {
		f := c.frame(fromClient, flags, payload)
		b.add(&f, 0)
	}
	want := pattern(40*1000, 9)
	send(true, "S", nil)
	send(false, "SA", nil) // batch 1: the handshake
	for i := 0; i < 40; i++ {
		send(false, "PA", want[i*1000:(i+1)*1000]) // batches 2..21
	}
	send(false, "FA", nil)
	send(true, "FA", nil)
	b.flush()

	// The previous owner: takes batches 1 and 2, gives back 1, keeps 2.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := &worker{e: &engine{cfg: cfg}, shard: 0, consName: cfg.Consumer + "-0", sid: "0"}
	cons, err := js.CreateOrUpdateConsumer(ctx, proto.FramesStream, w.consumerConfig())
	if err != nil {
		t.Fatal(err)
	}
	mb, err := cons.Fetch(2, jetstream.FetchMaxWait(10*time.Second), jetstream.FetchPriorityGroup(priorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range mb.Messages() {
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("previous owner fetched %d batches, want 2 (%v)", len(got), mb.Error())
	}
	if err := got[0].Nak(); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, proto.FramesStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.UnpinConsumer(ctx, cfg.Consumer+"-0", priorityGroup); err != nil {
		t.Fatal(err)
	}

	startEngine(t, cfg)
	checkExact(t, col, want)
}

// TestRecoveryNATSRestart restarts the NATS server (same port and store)
// while batches of an open connection are published and consumed. No
// frame is lost, so no gap may be reported: a fetch cut by the restart
// leaves deliveries the server redelivers only after their ack wait, and
// the engine must wait for them rather than move the connection past
// them.
func TestRecoveryNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	srv, url := natstestRun(t)
	_, js := connect(t, url)
	cfg := recoveryConfig(url)
	startEngine(t, cfg)

	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(t, "10.2.0.1:40002", "10.2.0.2:9000", 7, &clock)
	const segs = 3000
	want := pattern(segs*1000, 11)
	// The publisher retries every batch with short timeouts until it is
	// stored (the first requests after a restart can be lost), in order.
	var mu sync.Mutex
	published := 0
	pub := func(i int, data []byte) {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := js.Publish(ctx, proto.FramesSubject(7, 0), data, jetstream.WithMsgID(fmt.Sprintf("recovery-%d", i)))
			cancel()
			if err == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	batches := [][]byte{frameBatch(t, c.frame(true, "S", nil), c.frame(false, "SA", nil))}
	for i := 0; i < segs; i += 2 {
		batches = append(batches, frameBatch(t, c.frame(false, "PA", want[i*1000:(i+1)*1000]), c.frame(false, "PA", want[(i+1)*1000:(i+2)*1000])))
	}
	batches = append(batches, frameBatch(t, c.frame(false, "FA", nil), c.frame(true, "FA", nil)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, bt := range batches {
			pub(i, bt)
			mu.Lock()
			published++
			mu.Unlock()
		}
	}()
	// Collect before the restart (an ordered consumer resumes after it).
	col := collect(t, js)
	waitFor(t, "a third of the batches", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return published > len(batches)/3
	})
	natstest.Restart(t, srv)
	<-done
	checkExact(t, col, want)
}

// firstDiff is the offset of the first byte where a and b differ (the
// shorter length when one is a prefix of the other; -1 when equal).
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) == len(b) {
		return -1
	}
	return min(len(a), len(b))
}
