package replay

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
	"github.com/tapline/tapline/replay/replaytest"
)

// TestDialManyConnectionsByteExact replays 60 generated connections at
// once, interleaved on four shards, with small, medium and multi-chunk
// messages, and checks the test system read every message byte for byte in
// each connection's order.
func TestDialManyConnectionsByteExact(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	rng := rand.New(rand.NewPCG(1, 2))
	const nConns = 60
	var convs []*conv
	for i := range nConns {
		c := newConv(i, fmt.Sprintf("/conn/%d?x=1", i))
		n := 5 + rng.IntN(15)
		for k := range n {
			size := rng.IntN(2000)
			switch {
			case k%7 == 3:
				size = 70000 + rng.IntN(70000)
			case i%20 == 5 && k == 2:
				size = 2*proto.MaxChunk + 12345 // three chunks
			}
			op := proto.OpBinary
			if k%2 == 0 {
				op = proto.OpText
			}
			c.add(proto.ClientToServer, op, replaytest.RandomBytes(rng, size))
			if k%3 == 0 {
				c.add(proto.ServerToClient, proto.OpText, []byte("server says hi"))
			}
		}
		convs = append(convs, c)
	}
	// Interleave the connections' entries as a real shard would.
	var lists [][]*nats.Msg
	for _, c := range convs {
		lists = append(lists, c.entries("websocket"))
	}
	var all []*nats.Msg
	for more := true; more; {
		more = false
		for i := range lists {
			if len(lists[i]) > 0 {
				k := min(len(lists[i]), 1+rng.IntN(3))
				all = append(all, lists[i][:k]...)
				lists[i] = lists[i][k:]
				more = true
			}
		}
	}
	e.publish(all...)
	r := e.startReplay(nil, "--target", srv.URL(), "--compare=false")

	want := 0
	for _, c := range convs {
		for _, m := range c.msgs {
			if m.Dir == proto.ClientToServer {
				want++
			}
		}
	}
	recs := srv.Wait(t, 120*time.Second, "every message", func(rs []testsys.Record) bool { return len(rs) >= want })
	byPath := map[string][]testsys.Record{}
	for _, rec := range recs {
		byPath[rec.Path] = append(byPath[rec.Path], rec)
	}
	for _, c := range convs {
		got := byPath[c.path]
		var exp []*replaytest.Message
		for _, m := range c.msgs {
			if m.Dir == proto.ClientToServer {
				exp = append(exp, m)
			}
		}
		if len(got) != len(exp) {
			t.Fatalf("%s: test system read %d messages, want %d", c.id, len(got), len(exp))
		}
		for i, m := range exp {
			typ := websocket.MessageBinary
			if m.Opcode == proto.OpText {
				typ = websocket.MessageText
			}
			if got[i].SHA256 != digest(m.Payload) || got[i].Size != int64(len(m.Payload)) || got[i].Type != typ {
				t.Fatalf("%s message %d: got %d bytes %s type %v, want %d bytes %s type %v", c.id, i, got[i].Size, short(got[i].SHA256), got[i].Type, len(m.Payload), short(digest(m.Payload)), typ)
			}
			if got[i].ConnN != got[0].ConnN {
				t.Fatalf("%s: messages spread over test connections %d and %d", c.id, got[0].ConnN, got[i].ConnN)
			}
		}
	}
	rs := e.waitResults(60*time.Second, "a summary per connection", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "sent") >= nConns
	})
	if n := countResults(rs, "message", "sent"); n != want {
		t.Fatalf("%d sent results, want %d", n, want)
	}
	if got := r.counter("tapline_replay_messages_total", "result", "sent"); got != float64(want) {
		t.Fatalf("sent counter %v, want %d", got, want)
	}
}

// TestDialCompression negotiates permessage-deflate toward the test system
// independently of the original connection (whose payloads the stream holds
// decoded) and still delivers every message byte for byte.
func TestDialCompression(t *testing.T) {
	for _, mode := range []struct {
		flag string
		srv  websocket.CompressionMode
	}{{"on", websocket.CompressionNoContextTakeover}, {"context-takeover", websocket.CompressionContextTakeover}} {
		t.Run(mode.flag, func(t *testing.T) {
			e := newEnv(t)
			srv := testsys.NewWS(t)
			srv.Compress = mode.srv
			c := newConv(1, "/z")
			var want [][32]byte
			for i := range 20 {
				p := []byte(strings.Repeat(fmt.Sprintf(`{"tick":%d,"price":"100.25"}`, i), 40))
				if i == 7 {
					p = bytes.Repeat([]byte("compressible "), proto.MaxChunk/6) // two chunks
				}
				c.add(proto.ClientToServer, proto.OpText, p)
				want = append(want, digest(p))
			}
			e.publish(c.entries("websocket")...)
			e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--compression", mode.flag)
			recs := srv.Wait(t, 60*time.Second, "every message", func(rs []testsys.Record) bool { return len(rs) >= len(want) })
			for i, w := range want {
				if recs[i].SHA256 != w {
					t.Fatalf("message %d differs", i)
				}
			}
		})
	}
}
