package replay

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
	"github.com/tapline/tapline/replay/replaytest"
)

// TestListenModePushesUpstreamMessages plays the motivating case: the
// production system is a WebSocket client of two external feeds. Replay
// listens in place of each feed; two test system connections per feed
// receive every server-to-client message byte for byte, in order, and
// nothing of the other feed or of the client's own messages.
func TestListenModePushesUpstreamMessages(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	addrs := map[string]string{}
	e.startReplay(func(c *Config) {
		c.onListen = func(up, addr string) {
			mu.Lock()
			addrs[up] = addr
			mu.Unlock()
		}
	}, "--listen", "127.0.0.1:0=203.0.113.7:443", "--listen", "127.0.0.1:0=/feed/b")
	var feedA, feedB string
	deadline := time.Now().Add(30 * time.Second)
	for feedA == "" || feedB == "" {
		if time.Now().After(deadline) {
			t.Fatal("listen addresses not bound")
		}
		time.Sleep(10 * time.Millisecond)
		mu.Lock()
		feedA, feedB = addrs["203.0.113.7:443"], addrs["/feed/b"]
		mu.Unlock()
	}
	a1 := testsys.Dial(t, "ws://"+feedA+"/anything")
	a2 := testsys.Dial(t, "ws://"+feedA+"/")
	b1 := testsys.Dial(t, "ws://"+feedB+"/feed/b")

	rng := rand.New(rand.NewPCG(3, 4))
	mk := func(i int, server, path string) *conv {
		c := newConv(i, path)
		c.server = server
		for k := range 30 {
			size := rng.IntN(3000)
			if k == 10 && i == 0 {
				size = proto.MaxChunk + 999 // two chunks
			}
			c.add(proto.ServerToClient, proto.OpBinary, replaytest.RandomBytes(rng, size))
			if k%5 == 0 {
				c.add(proto.ClientToServer, proto.OpText, []byte(`{"subscribe":"x"}`))
			}
		}
		return c
	}
	// Feed A had two consecutive connections (production reconnected);
	// feed B one; a third upstream has no listener.
	ca1, ca2 := mk(0, "203.0.113.7:443", "/ws"), mk(1, "203.0.113.7:443", "/ws")
	cb := mk(2, "198.51.100.9:443", "/feed/b")
	cx := mk(3, "192.0.2.1:443", "/other")
	var all []*nats.Msg
	for _, c := range []*conv{ca1, cb, ca2, cx} {
		all = append(all, c.entries("websocket")...)
	}
	e.publish(all...)

	// Messages of one original connection arrive in order; connections of
	// one upstream may interleave (they are replayed concurrently).
	type pos struct {
		conn string
		i    int
	}
	expect := func(cs ...*conv) map[[32]byte]pos {
		out := map[[32]byte]pos{}
		for _, c := range cs {
			i := 0
			for _, m := range c.msgs {
				if m.Dir == proto.ServerToClient {
					out[digest(m.Payload)] = pos{c.id, i}
					i++
				}
			}
		}
		return out
	}
	check := func(name string, cl *testsys.Client, want map[[32]byte]pos) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for len(cl.Records()) < len(want) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		got := cl.Records()
		if len(got) != len(want) {
			t.Fatalf("%s read %d messages, want %d", name, len(got), len(want))
		}
		next := map[string]int{}
		for i, rec := range got {
			p, ok := want[rec.SHA256]
			if !ok {
				t.Fatalf("%s message %d (%d bytes) is not one of the upstream's", name, i, rec.Size)
			}
			if p.i != next[p.conn] {
				t.Fatalf("%s: message %d of %s arrived when %d was due", name, p.i, p.conn, next[p.conn])
			}
			next[p.conn]++
		}
	}
	check("feed A client 1", a1, expect(ca1, ca2))
	check("feed A client 2", a2, expect(ca1, ca2))
	check("feed B client", b1, expect(cb))
	rs := e.waitResults(30*time.Second, "a skipped summary for the unmatched upstream", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "skipped") >= 1
	})
	for _, r := range rs {
		if r.body.Kind == "summary" && r.body.Result == "skipped" && r.body.Conn != cx.id {
			t.Fatalf("unexpected skipped connection %s: %s", r.body.Conn, r.body.Reason)
		}
	}
}

// TestListenModeWaitsForTestSystem checks that nothing is acknowledged while
// no test system is connected, and that everything arrives once one is.
func TestListenModeWaitsForTestSystem(t *testing.T) {
	e := newEnv(t)
	addrCh := make(chan string, 1)
	r := e.startReplay(func(c *Config) { c.onListen = func(_, a string) { addrCh <- a } }, "--listen", "127.0.0.1:0=/feed")
	addr := <-addrCh
	c := newConv(0, "/feed")
	for i := range 20 {
		c.add(proto.ServerToClient, proto.OpText, []byte(fmt.Sprintf("tick %d", i)))
	}
	e.publish(c.entries("websocket")...)
	// Wait until replay holds the messages, then check none was acked.
	deadline := time.Now().Add(30 * time.Second)
	for r.counter("tapline_replay_unacked_messages") < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.counter("tapline_replay_messages_total", "result", "sent"); n != 0 {
		t.Fatalf("%v messages reported sent with no test system connected", n)
	}
	cl := testsys.Dial(t, "ws://"+addr+"/feed")
	deadline = time.Now().Add(60 * time.Second)
	for len(cl.Records()) < 20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := cl.Records()
	if len(got) != 20 {
		t.Fatalf("client read %d, want 20", len(got))
	}
	for i, rec := range got {
		if string(rec.Payload) != fmt.Sprintf("tick %d", i) {
			t.Fatalf("message %d = %q", i, rec.Payload)
		}
	}
}
