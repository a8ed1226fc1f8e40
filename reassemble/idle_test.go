package reassemble

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
)

// liveWS is a WebSocket connection sent to the engine as it happens: every
// frame's capture time is the wall clock, as decap's would be.
type liveWS struct {
	t     *testing.T
	js    jetstream.JetStream
	c     *synthConn
	clock int64
	n     int // server messages sent
}

func newLiveWS(t *testing.T, js jetstream.JetStream, cli string) *liveWS {
	l := &liveWS{t: t, js: js}
	l.c = newSynthConn(t, cli, "10.9.0.2:443", 5, &l.clock)
	return l
}

// send publishes frames of the connection as one batch, stamped now.
func (l *liveWS) send(frames ...func() framebatch.Frame) {
	b := newBatcher(l.t, l.js, 1000)
	for _, fn := range frames {
		l.clock = time.Now().UnixNano() - 1000 // frame adds 1000
		f := fn()
		b.add(&f, shardOf(l.t, &f, 2))
	}
	b.flush()
}

func (l *liveWS) pkt(client bool, flags string, p []byte) func() framebatch.Frame {
	return func() framebatch.Frame { return l.c.frame(client, flags, p) }
}

// open sends the TCP and WebSocket handshakes.
func (l *liveWS) open() {
	l.send(l.pkt(true, "S", nil), l.pkt(false, "SA", nil), l.pkt(true, "A", nil),
		l.pkt(true, "PA", []byte(upgradeReq)), l.pkt(false, "PA", []byte(upgradeResp)))
}

// push sends the next server message (a text frame) and returns it.
func (l *liveWS) push() []byte {
	l.n++
	m := []byte(fmt.Sprintf(`{"push":%d,"data":"%s"}`, l.n, bytes.Repeat([]byte("abcdefgh"), 10+l.n)))
	l.send(l.pkt(false, "PA", wsFrame(1, m, false)))
	return m
}

// serverMsgs returns the text messages of the server direction of every
// connection the collector has seen, in order, with their connection.
func serverMsgs(col *collector) (conns []*connOut, msgs []*gotMsg) {
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, id := range col.order {
		c := col.conns[id]
		conns = append(conns, c)
		for _, m := range c.msgs[proto.ServerToClient] {
			if m.last {
				msgs = append(msgs, m)
			}
		}
	}
	return conns, msgs
}

// TestIdleQuietConnectionStaysOpen: a WebSocket silent for less than the
// idle timeout keeps its connection; its next message arrives on it,
// complete and exact (the idle clock used to add the silence to itself
// every second, so 4 s of silence counted as 10 s). A silence longer than
// the idle timeout closes it once, with reason idle, not before the
// timeout.
func TestIdleQuietConnectionStaysOpen(t *testing.T) {
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	cfg := testConfig(url, 2, "idle")
	cfg.NewDecoder = nil
	cfg.IdleTimeout = 5 * time.Second
	startEngine(t, cfg)

	l := newLiveWS(t, js, "10.9.0.1:51000")
	l.open()
	var want [][]byte
	want = append(want, l.push())
	waitFor(t, "first message", func() bool { _, ms := serverMsgs(col); return len(ms) == 1 })

	time.Sleep(4 * time.Second) // quiet, below the idle timeout
	want = append(want, l.push())
	waitFor(t, "second message", func() bool {
		cs, ms := serverMsgs(col)
		return len(ms) == 2 || len(cs) > 1 || len(col.closed()) > 0
	})
	cs, ms := serverMsgs(col)
	if len(cs) != 1 || len(col.closed()) != 0 {
		for _, c := range cs {
			t.Logf("conn %s open %+v close %+v", c.id, c.open, c.closeEv)
		}
		t.Fatalf("%d connections, %d closed after 4 s of silence with a 5 s idle timeout", len(cs), len(col.closed()))
	}
	for i, m := range ms {
		if !m.complete || m.opcode != proto.OpText || !bytes.Equal(m.body, want[i]) {
			t.Fatalf("message %d: %s complete %v, %q", i, m.opcode, m.complete, m.body)
		}
	}

	last := time.Now()
	waitFor(t, "idle close", func() bool { return len(col.closed()) > 0 })
	quiet := time.Since(last)
	time.Sleep(2 * time.Second) // a second close would be here by now
	cl := col.closed()
	if len(cl) != 1 || cl[0].closeEv.Reason != "idle" {
		t.Fatalf("%d closes, first %+v", len(cl), cl[0].closeEv)
	}
	// Not before the timeout; the upper bound only says "around it":
	// the clock advances once a fetch confirms nothing is pending, and
	// every second.
	if quiet < cfg.IdleTimeout-100*time.Millisecond || quiet > 3*cfg.IdleTimeout {
		t.Fatalf("closed idle after %s of silence, idle timeout %s", quiet, cfg.IdleTimeout)
	}
	if c := cl[0].closeEv.S2C; c.MessagesComplete != 2 || c.BytesMissing != 0 {
		t.Fatalf("close summary %+v", c)
	}
}
