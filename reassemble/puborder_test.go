package reassemble

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// TestPublishOrderAckLost: an entry whose publish the server never got
// (its ack times out while later publishes are acknowledged, as when the
// messages stream's leader is lost in an election) is resent, and still
// every reader sees a connection's entries in an order it can rebuild: a
// message's first chunk, and every event, after all earlier entries of
// the connection; a message's chunks at most maxConn ahead of an earlier
// one of it. Before, every publish in flight of the shard (up to
// --max-inflight, 256) could be stored ahead of the resent one: replay saw
// the next message begin before the last chunk of the one it was sending
// and aborted that one ("message ended without its last chunk"), or an
// event ahead of the data it follows.
func TestPublishOrderAckLost(t *testing.T) {
	for _, drop := range []string{"conn-a/s2c/5/0", "conn-a/s2c/5/1", "conn-a/gap/3", "conn-a/open"} {
		t.Run(drop, func(t *testing.T) { publishOrderAckLost(t, drop) })
	}
}

func publishOrderAckLost(t *testing.T, drop string) {
	_, url := natstest.Run(t)
	px := natstest.NewDropProxy(t, url, "Nats-Msg-Id: "+drop+"\r\n")
	nc, err := nats.Connect(px.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.MsgsStream); err != nil {
		t.Fatal(err)
	}
	const maxConn = 4
	p := &publisher{js: js, log: slog.Default(), max: 256, maxBytes: 16 << 20, maxConn: maxConn,
		release: func(*batch) {}, onStored: func() {}, onRetry: func() {}, connected: nc.IsConnected, retryCtx: ctx}

	// Two connections on one shard: conn-a's entries (open, messages of 6
	// chunks, a gap event every 10 messages, close) interleaved with
	// conn-b's one-chunk messages.
	subject := proto.MsgsSubject(1, 0)
	var want []string // conn-a's entry ids, in publish order
	pub := func(m *nats.Msg) {
		t.Helper()
		if m.Header.Get(proto.HdrConn) == "conn-a" {
			want = append(want, m.Header.Get(proto.HdrMsgID))
		}
		if err := p.publish(m, nil); err != nil {
			t.Fatal(err)
		}
	}
	event := func(conn string, kind proto.Kind, id string) *nats.Msg {
		m, err := proto.EventMsg(subject, kind, conn, 1, id, map[string]string{"conn": conn})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	chunk := func(conn string, seq uint64, idx int, last bool) *nats.Msg {
		c := &proto.Chunk{Conn: conn, VNI: 1, Dir: proto.ServerToClient, Seq: seq, Index: idx, Last: last, Opcode: proto.OpBinary, Complete: true}
		h := c.Header()
		h.Set(proto.HdrMsgID, c.MsgID())
		return &nats.Msg{Subject: subject, Header: h, Data: make([]byte, 1000)}
	}
	pub(event("conn-a", proto.KindOpen, "conn-a/open"))
	pub(event("conn-b", proto.KindOpen, "conn-b/open"))
	for seq := uint64(1); seq <= 40; seq++ {
		if seq%10 == 3 {
			pub(event("conn-a", proto.KindGap, "conn-a/gap/"+strconv.FormatUint(seq, 10)))
		}
		for i := range 6 {
			pub(chunk("conn-a", seq, i, i == 5))
			pub(chunk("conn-b", uint64(6*(seq-1)+uint64(i)+1), 0, true))
		}
	}
	pub(event("conn-a", proto.KindClose, "conn-a/close"))
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	if n := px.Dropped(); n != 1 {
		t.Fatalf("the proxy dropped %d publishes, want 1", n)
	}

	got := storedEntries(t, js, "conn-a")
	if len(got) != len(want) {
		t.Fatalf("%d entries of conn-a stored, want %d", len(got), len(want))
	}
	rank := map[string]int{}
	for i, id := range want {
		rank[id] = i
	}
	ahead := map[string]int{} // chunks of its message stored ahead of one
	reordered, bad := 0, 0
	fail := func(format string, args ...any) {
		if bad++; bad <= 5 {
			t.Errorf(format, args...)
		}
	}
	for i, id := range got {
		for _, later := range got[:i] {
			if rank[later] < rank[id] {
				continue
			}
			// later was published after id but stored before it.
			reordered++
			if sameMessage(later, id) && chunkIndex(later) > 0 {
				if ahead[id]++; ahead[id] == maxConn {
					fail("%d chunks of its message stored ahead of %s, more than maxConn-1 (%d)", ahead[id], id, maxConn-1)
				}
				continue
			}
			fail("%s stored ahead of %s, published before it: a reader cannot rebuild the connection", later, id)
		}
	}
	if bad > 0 {
		t.Errorf("%d pairs of entries stored out of an order a reader can rebuild", bad)
	}
	t.Logf("dropped %s: %d chunks stored ahead of an earlier one of their message (at most maxConn-1 each)", drop, reordered)
}

// sameMessage reports whether two chunk ids (conn/dir/seq/index) belong to
// one message.
func sameMessage(a, b string) bool {
	var sa, sb uint64
	var ia, ib int
	na, _ := fmt.Sscanf(a, "conn-a/s2c/%d/%d", &sa, &ia)
	nb, _ := fmt.Sscanf(b, "conn-a/s2c/%d/%d", &sb, &ib)
	return na == 2 && nb == 2 && sa == sb
}

// chunkIndex is the index of a chunk id, -1 for an event.
func chunkIndex(id string) int {
	var s uint64
	var i int
	if n, _ := fmt.Sscanf(id, "conn-a/s2c/%d/%d", &s, &i); n == 2 {
		return i
	}
	return -1
}

// storedEntries reads the messages stream in order and returns the ids of
// conn's entries.
func storedEntries(t *testing.T, js jetstream.JetStream, conn string) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for _, m := range natstest.StoredMsgs(t, js, proto.MsgsStream) {
		id := m.Headers().Get(proto.HdrMsgID)
		if seen[id] {
			t.Errorf("%s stored twice", id)
		}
		seen[id] = true
		if m.Headers().Get(proto.HdrConn) == conn {
			out = append(out, id)
		}
	}
	return out
}
