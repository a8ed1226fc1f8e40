package reassemble

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
)

// TestRecoverySharedBatchesOfResumedConn: connection B shares every
// batch with a long-lived connection A, closes idle, resumes (B') and
// ends with FIN, all before the only instance dies. A keeps every batch
// unacknowledged, so the successor gets B's frames again although B and
// B' were published and closed. They must not be published again
// differently: no third connection id on B's 5-tuple, no Msg-Id published
// with other bytes, no second close, no gap.
func TestRecoverySharedBatchesOfResumedConn(t *testing.T) { runSharedBatches(t, true) }

// TestRecoverySharedBatchesOfResumedOpen: the same with B' still open at
// the crash: it held no batch of its own (a resumed connection did not
// hold) and appears only in batches A holds. The successor continues it
// under its id and message numbers, and its later messages are exact.
func TestRecoverySharedBatchesOfResumedOpen(t *testing.T) { runSharedBatches(t, false) }

func runSharedBatches(t *testing.T, closeResumed bool) {
	if testing.Short() {
		t.Skip("-short")
	}
	_, url := natstestRun(t)
	nc, js := connect(t, url)
	col := collect(t, js)
	pubs := watchPublishes(t, nc)
	cfg := testConfig(url, 1, "before-crash")
	cfg.NewDecoder = nil // the WebSocket decoder
	cfg.IdleTimeout = 2 * time.Second
	cfg.AckWait, cfg.PinnedTTL = 3*time.Second, 2*time.Second
	cfg.crashOnStop = true

	var clock int64
	a := newSynthConn(t, "10.4.0.1:42000", "10.4.0.2:443", 7, &clock)
	b := newSynthConn(t, "10.4.0.3:42001", "10.4.0.2:443", 7, &clock)
	f := &sharedBatches{t: t, js: js, msgID: "shared", size: 3000,
		stamp: func() { clock = time.Now().UnixNano() }} // stamped now, as decap would
	send, p, msg := f.send, f.pkt, f.msg
	var wantA, wantB [][]byte
	f.handshake(a, b)
	send(msg(a, &wantA), msg(b, &wantB))
	crash := startEngine(t, cfg)

	byClient := func(cli string) []*connOut {
		col.mu.Lock()
		defer col.mu.Unlock()
		var out []*connOut
		for _, id := range col.order {
			if c := col.conns[id]; c.open != nil && c.open.Client == cli {
				out = append(out, c)
			}
		}
		return out
	}
	// A alone past B's idle timeout: B closes idle.
	for range 8 {
		send(msg(a, &wantA))
		time.Sleep(500 * time.Millisecond)
		if cs := byClient(b.cli.String()); len(cs) == 1 && cs[0].closeEv != nil {
			break
		}
	}
	waitFor(t, "B's idle close", func() bool { cs := byClient(b.cli.String()); return len(cs) == 1 && cs[0].closeEv != nil })
	// B resumes, in batches A shares.
	send(msg(a, &wantA), msg(b, &wantB))
	send(msg(a, &wantA), msg(b, &wantB))
	if closeResumed {
		send(p(b, true, "FA", nil), p(b, false, "FA", nil), msg(a, &wantA))
	}
	waitFor(t, "B' published", func() bool {
		cs := byClient(b.cli.String())
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(cs) == 2 && len(cs[1].msgs[proto.ServerToClient]) == 2 && (!closeResumed || cs[1].closeEv != nil)
	})
	time.Sleep(500 * time.Millisecond) // every entry stored, every batch held
	if len(doneKeys(t, js)) == 0 {
		t.Fatal("no record of B in the bucket")
	}
	crash()

	cfgB := cfg
	cfgB.InstanceID = "after-crash"
	cfgB.crashOnStop = false
	startEngine(t, cfgB)
	send(msg(a, &wantA))
	if !closeResumed {
		send(msg(b, &wantB), msg(a, &wantA))
		send(p(b, true, "FA", nil), p(b, false, "FA", nil))
	}
	send(p(a, true, "FA", nil), p(a, false, "FA", nil))
	waitFor(t, "A and B' closed", func() bool {
		as, bs := byClient(a.cli.String()), byClient(b.cli.String())
		return len(as) >= 1 && as[0].closeEv != nil && len(bs) >= 2 && bs[1].closeEv != nil
	})
	time.Sleep(time.Second) // anything published twice or under another id is here by now

	for _, e := range pubs.conflicts() {
		t.Error(e)
	}
	as, bs := byClient(a.cli.String()), byClient(b.cli.String())
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	if len(as) != 1 {
		t.Errorf("A: %d connection ids, want 1", len(as))
	}
	if len(bs) != 2 {
		for _, c := range bs {
			t.Logf("B: %s open %+v close %+v", c.id, c.open, c.closeEv)
		}
		t.Fatalf("B: %d connection ids, want 2 (the first and its resumption)", len(bs))
	}
	if bs[0].closeEv == nil || bs[0].closeEv.Reason != "idle" {
		t.Errorf("B: close %+v, want idle", bs[0].closeEv)
	}
	if bs[1].open.Resumes != bs[0].id || bs[1].open.Protocol != "websocket" {
		t.Errorf("B': open %+v, want a WebSocket resuming %s", bs[1].open, bs[0].id)
	}
	checkMessages(t, as[0], proto.ServerToClient, wantA, 0)
	checkMessages(t, bs[0], proto.ServerToClient, wantB[:1], 0)
	checkMessages(t, bs[1], proto.ServerToClient, wantB, 1)
	for _, c := range append(as, bs...) {
		for _, g := range c.gaps {
			t.Errorf("%s: gap %+v reported, but no frame was lost", c.id, g)
		}
		if c.closeEv == nil {
			t.Errorf("%s: no close", c.id)
			continue
		}
		if got, want := c.closeEv.S2C.MessagesComplete, int64(len(c.msgs[proto.ServerToClient])); got != want {
			t.Errorf("%s: close counts %d complete, the stream holds %d", c.id, got, want)
		}
		for id, k := range c.chunks {
			if k != 1 {
				t.Errorf("chunk %s stored %d times", id, k)
			}
		}
	}
	col.mu.Unlock()
	// Every connection ended and every batch is acknowledged: no record
	// is needed any more, and none is kept.
	waitFor(t, "the records pruned", func() bool { return len(doneKeys(t, js)) == 0 })
	col.mu.Lock()
}

// doneKeys lists the keys of the connection records' bucket.
func doneKeys(t *testing.T, js jetstream.JetStream) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, doneBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// publishLog sees every entry published on the messages subjects (a core
// subscription: also the copies JetStream drops as duplicates) and finds
// a Msg-Id published with other content.
type publishLog struct {
	mu   sync.Mutex
	seen map[string]string // Nats-Msg-Id -> content
	errs []string
}

func watchPublishes(t *testing.T, nc *nats.Conn) *publishLog {
	t.Helper()
	l := &publishLog{seen: map[string]string{}}
	sub, err := nc.Subscribe("tapline.msgs.>", func(m *nats.Msg) {
		id := m.Header.Get(nats.MsgIdHdr)
		c := publishedContent(m)
		l.mu.Lock()
		defer l.mu.Unlock()
		if old, ok := l.seen[id]; ok && old != c {
			l.errs = append(l.errs, fmt.Sprintf("Msg-Id %s published twice with other content:\n%s\n%s", id, old, c))
		}
		l.seen[id] = c
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// publishedContent is what two publishes of one entry must agree on: a
// chunk's headers and bytes, an event's kind and, for a close, its reason
// and counts (not its time).
func publishedContent(m *nats.Msg) string {
	if proto.Kind(m.Header.Get(proto.HdrKind)) == proto.KindClose {
		var ev proto.CloseEvent
		_ = jsonUnmarshal(m.Data, &ev)
		return fmt.Sprintf("close %s %+v %+v", ev.Reason, ev.C2S, ev.S2C)
	}
	if proto.Kind(m.Header.Get(proto.HdrKind)) != proto.KindData {
		return m.Header.Get(proto.HdrKind)
	}
	ch, _ := proto.ParseChunk(m.Header)
	return fmt.Sprintf("chunk seq %d #%d last %v complete %v size %d: %d bytes sha256 %x", ch.Seq, ch.Index, ch.Last, ch.Complete, ch.Size, len(m.Data), sha256.Sum256(m.Data))
}

func (l *publishLog) conflicts() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

// TestRecoverySharedBatchesOfUnheldConn: A stopped holding its batches
// (past --max-held-batches) while B, open, still holds the batches the two
// share; then the only instance dies. The successor gets A's frames again
// in B's batches: it skips what the first owner processed and continues A
// after them as a connection that resumes it, every message exact, no
// gap and no Msg-Id published with other content (A used to be rebuilt
// from its first packet with holes where its own batches were
// acknowledged). A's first id has no close event: a known limit.
func TestRecoverySharedBatchesOfUnheldConn(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	_, url := natstestRun(t)
	nc, js := connect(t, url)
	col := collect(t, js)
	pubs := watchPublishes(t, nc)
	cfg := testConfig(url, 1, "before-crash")
	cfg.NewDecoder = nil
	cfg.IdleTimeout = time.Hour
	cfg.MaxHeldBatches = 30
	cfg.AckWait, cfg.PinnedTTL = 3*time.Second, 2*time.Second
	cfg.crashOnStop = true

	clock := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).UnixNano()
	a := newSynthConn(t, "10.4.1.1:43000", "10.4.1.2:443", 7, &clock)
	b := newSynthConn(t, "10.4.1.3:43001", "10.4.1.2:443", 7, &clock)
	f := &sharedBatches{t: t, js: js, msgID: "unheld", size: 2000}
	send, p, msg := f.send, f.pkt, f.msg
	var wantA, wantB [][]byte
	f.handshake(a, b)
	send(msg(a, &wantA), msg(b, &wantB))
	for range 30 {
		send(msg(a, &wantA)) // A alone past the limit: A stops holding
	}
	send(msg(a, &wantA), msg(b, &wantB))
	send(msg(a, &wantA), msg(b, &wantB))
	crash, reg := startEngineReg(t, cfg)
	total := func() (na, nb int) {
		col.mu.Lock()
		defer col.mu.Unlock()
		for _, c := range col.conns {
			if c.open == nil {
				continue
			}
			k := len(c.msgs[proto.ServerToClient])
			if c.open.Client == a.cli.String() {
				na += k
			} else {
				nb += k
			}
		}
		return na, nb
	}
	waitFor(t, "every message published", func() bool { na, nb := total(); return na == len(wantA) && nb == len(wantB) })
	if v := metricValue(t, reg, "tapline_reassemble_unreplayable_connections_total", nil); v != 1 {
		t.Fatalf("%v connections stopped holding, want 1 (A)", v)
	}
	time.Sleep(500 * time.Millisecond)
	crash()

	cfgB := cfg
	cfgB.InstanceID = "after-crash"
	cfgB.crashOnStop = false
	startEngine(t, cfgB)
	send(msg(a, &wantA), msg(b, &wantB))
	send(p(a, true, "FA", nil), p(a, false, "FA", nil), p(b, true, "FA", nil), p(b, false, "FA", nil))
	waitFor(t, "B and A's continuation closed", func() bool { return len(col.closed()) >= 2 })
	time.Sleep(time.Second)

	for _, e := range pubs.conflicts() {
		t.Error(e)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	var as, bs []*connOut
	for _, id := range col.order {
		c := col.conns[id]
		if c.open != nil && c.open.Client == a.cli.String() {
			as = append(as, c)
		} else if c.open != nil {
			bs = append(bs, c)
		}
	}
	if len(bs) != 1 || bs[0].closeEv == nil || bs[0].closeEv.Reason != "fin" {
		t.Fatalf("B: %d ids, want one closed by fin", len(bs))
	}
	checkMessages(t, bs[0], proto.ServerToClient, wantB, 0)
	if len(as) != 2 || as[1].open.Resumes != as[0].id || as[1].open.Protocol != "websocket" {
		for _, c := range as {
			t.Logf("A: %s open %+v close %+v", c.id, c.open, c.closeEv)
		}
		t.Fatalf("A: %d ids, want 2: the first and, after the crash, one resuming it", len(as))
	}
	k := len(as[0].msgs[proto.ServerToClient])
	checkMessages(t, as[0], proto.ServerToClient, wantA[:k], 0)
	checkMessages(t, as[1], proto.ServerToClient, wantA, k)
	for _, c := range append(as, bs...) {
		for _, g := range c.gaps {
			t.Errorf("%s: gap %+v reported, but no frame was lost", c.id, g)
		}
	}
}

// pkt makes one frame when its batch is built (so the clock it reads is
// the batch's).
type pkt func() framebatch.Frame

// sharedBatches publishes frame batches that carry frames of several
// synthetic connections (VNI 7, shard 0), as decap batches a shard's
// frames, with Msg-Ids <msgID>-<n>, and makes their WebSocket messages.
type sharedBatches struct {
	t     *testing.T
	js    jetstream.JetStream
	msgID string
	size  int    // messages are size+7·k bytes
	stamp func() // optional: sets the connections' clock before a batch
	n     int
	seed  byte
}

// send publishes one batch of the frames ps make.
func (f *sharedBatches) send(ps ...pkt) {
	f.t.Helper()
	if f.stamp != nil {
		f.stamp()
	}
	var fs []framebatch.Frame
	for _, p := range ps {
		fs = append(fs, p())
	}
	f.n++
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.js.Publish(ctx, proto.FramesSubject(7, 0), frameBatch(f.t, fs...), jetstream.WithMsgID(fmt.Sprintf("%s-%d", f.msgID, f.n))); err != nil {
		f.t.Fatal(err)
	}
}

// pkt is a frame of c.
func (f *sharedBatches) pkt(c *synthConn, client bool, flags string, payload []byte) pkt {
	return func() framebatch.Frame { return c.frame(client, flags, payload) }
}

// msg is the next server-to-client binary message of c, appended to want.
func (f *sharedBatches) msg(c *synthConn, want *[][]byte) pkt {
	f.seed++
	m := pattern(f.size+int(f.seed)*7, f.seed)
	*want = append(*want, m)
	return f.pkt(c, false, "PA", wsFrame(2, m, false))
}

// handshake sends the TCP and WebSocket handshakes of a and b, a batch per
// step with both connections' frames.
func (f *sharedBatches) handshake(a, b *synthConn) {
	f.send(f.pkt(a, true, "S", nil), f.pkt(b, true, "S", nil))
	f.send(f.pkt(a, false, "SA", nil), f.pkt(b, false, "SA", nil))
	f.send(f.pkt(a, true, "PA", []byte(upgradeReq)), f.pkt(b, true, "PA", []byte(upgradeReq)))
	f.send(f.pkt(a, false, "PA", []byte(upgradeResp)), f.pkt(b, false, "PA", []byte(upgradeResp)))
}
