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

// TestIdleResumedWebSocket: a WebSocket silent past the idle timeout is
// closed idle; its next messages, on the same 5-tuple, open a connection
// that resumes it as a WebSocket — same path, mid_stream, resumes the
// first. A single binary message that then goes quiet again used to be
// published as a complete raw TCP run (a mid-stream hunt cannot verify
// one binary frame); now it is exact. With bytes lost before the next
// messages the connection still resumes as a WebSocket: what comes out is
// exact or flagged, never a raw TCP run.
func TestIdleResumedWebSocket(t *testing.T) {
	for _, tc := range []struct {
		name      string
		lost, fin bool
		n         int
		binary    bool
	}{
		{"one binary", false, false, 1, true},
		{"three text", false, true, 3, false},
		{"lost, three text", true, true, 3, false},
		{"lost, one binary", true, false, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := natstestRun(t)
			_, js := connect(t, url)
			col := collect(t, js)
			cfg := testConfig(url, 2, "resume")
			cfg.NewDecoder = nil
			cfg.IdleTimeout = 2 * time.Second
			startEngine(t, cfg)

			l := newLiveWS(t, js, "10.9.0.1:51000")
			l.open()
			first := l.push()
			waitFor(t, "idle close", func() bool { return len(col.closed()) == 1 })
			if r := col.closed()[0].closeEv.Reason; r != "idle" {
				t.Fatalf("close reason %q", r)
			}
			if tc.lost {
				l.c.seq[1] += 40 // a segment of the server never mirrored
			}
			var want [][]byte
			for i := 0; i < tc.n; i++ {
				if tc.binary {
					m := pattern(300+i, byte(i))
					l.send(l.pkt(false, "PA", wsFrame(2, m, false)))
					want = append(want, m)
				} else {
					want = append(want, l.push())
				}
			}
			if tc.fin {
				l.send(l.pkt(true, "FA", nil), l.pkt(false, "FA", nil))
			}
			waitFor(t, "second close", func() bool { return len(col.closed()) == 2 })
			cs, _ := serverMsgs(col)
			if len(cs) != 2 {
				t.Fatalf("%d connections", len(cs))
			}
			a, b := cs[0], cs[1]
			if len(a.msgs[proto.ServerToClient]) != 1 || !bytes.Equal(a.msgs[proto.ServerToClient][0].body, first) {
				t.Fatalf("first connection's messages %+v", a.msgs)
			}
			col.mu.Lock()
			defer col.mu.Unlock()
			var got []*gotMsg
			for _, m := range b.msgs[proto.ServerToClient] {
				if m.opcode == proto.OpTCP {
					t.Fatalf("raw TCP run of %d B (complete %v) on a resumed WebSocket", len(m.body), m.complete)
				}
				got = append(got, m)
			}
			if b.open == nil || b.open.Protocol != "websocket" || !b.open.MidStream || b.open.Resumes != a.id || b.open.Path != "/feed" {
				t.Fatalf("resumed connection's open %+v", b.open)
			}
			if !tc.lost {
				if len(got) != len(want) {
					t.Fatalf("%d messages after the idle close, want %d", len(got), len(want))
				}
				for i, m := range got {
					if !m.complete || !bytes.Equal(m.body, want[i]) {
						t.Fatalf("message %d: complete %v %q", i, m.complete, m.body)
					}
				}
				return
			}
			if len(b.gaps) != 1 || b.gaps[0].Bytes != 40 || b.closeEv.S2C.BytesMissing != 40 {
				t.Fatalf("gaps %+v, close %+v", b.gaps, b.closeEv)
			}
			exact := 0
			for _, m := range got {
				if !m.complete {
					continue
				}
				ok := false
				for _, w := range want {
					ok = ok || bytes.Equal(m.body, w)
				}
				if !ok {
					t.Fatalf("complete message %q was not sent", m.body)
				}
				exact++
			}
			if tc.n > 1 && exact < 1 {
				t.Fatalf("no message exact after the loss: %d messages", len(got))
			}
		})
	}
}
