package replay

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// withoutMsgID is a copy of m that JetStream stores again under a new
// stream sequence (no de-duplication id): a chunk published twice.
func withoutMsgID(m *nats.Msg) *nats.Msg {
	c := nats.NewMsg(m.Subject)
	c.Data = m.Data
	for k, v := range m.Header {
		if k != nats.MsgIdHdr {
			c.Header[k] = v
		}
	}
	return c
}

// TestChunksOutOfOrderReordered: the chunks of a large message reach
// replay out of order (as redeliveries after restarts do), the first chunk
// itself late or not. Replay puts them back in order: the test system
// reads the message exactly, once, and it is reported sent.
func TestChunksOutOfOrderReordered(t *testing.T) {
	for name, order := range map[string][]int{"middle-late": {0, 2, 1, 3}, "first-late": {1, 0, 3, 2}, "reversed": {3, 2, 1, 0}} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			srv := testsys.NewWS(t)
			c := newConv(1, "/order")
			c.add(proto.ClientToServer, proto.OpText, []byte("before"))
			chunks, payload := bigMsg(c, 4, 21)
			c.add(proto.ClientToServer, proto.OpText, []byte("after"))
			msgs := []*nats.Msg{c.open("websocket")}
			for ch := range c.msgs[0].Chunks() {
				msgs = append(msgs, ch)
			}
			for _, i := range order {
				msgs = append(msgs, chunks[i])
			}
			for ch := range c.msgs[2].Chunks() {
				msgs = append(msgs, ch)
			}
			e.publish(append(msgs, c.close())...)
			e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--ack-wait", "2s")
			rs := e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
				return countKind(rs, "summary") >= 1
			})
			recs := srv.Records()
			if len(recs) != 3 || recs[1].SHA256 != digest(payload) || string(recs[0].Payload) != "before" || string(recs[2].Payload) != "after" {
				for _, r := range rs {
					t.Logf("result %+v", r.body)
				}
				t.Fatalf("test system read %d messages, want before, the %d-byte message exactly, after", len(recs), len(payload))
			}
			if n := countResults(rs, "message", "sent"); n != 3 {
				t.Fatalf("%d sent results, want 3", n)
			}
			waitAcked(t, e, "tapline-replay")
		})
	}
}

// TestChunkMissingNeverFinished: a chunk of a large message never comes
// (its connection's close event does). Replay must not finish the message
// without it — the test system would read a complete message with other
// bytes. It aborts it and reports it skipped, once.
func TestChunkMissingNeverFinished(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/order")
	chunks, payload := bigMsg(c, 4, 21)
	e.publish(c.open("websocket"), chunks[0], chunks[2], chunks[3], c.close())
	e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--ack-wait", "2s")
	rs := e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
		return countKind(rs, "summary") >= 1
	})
	for _, rec := range srv.Records() {
		if rec.SHA256 != digest(payload) {
			t.Fatalf("test system read a complete %d-byte message that is not the production message", rec.Size)
		}
	}
	if n := len(srv.Records()); n != 0 {
		t.Fatalf("test system read %d messages, want none (the message aborted)", n)
	}
	if n := countResults(rs, "message", "sent"); n != 0 {
		t.Fatalf("%d sent results for a message the test system never read", n)
	}
	if n := countResults(rs, "message", "skipped"); n != 1 {
		t.Fatalf("%d skipped results, want the aborted message reported once", n)
	}
	waitAcked(t, e, "tapline-replay")
}

// TestChunkPublishedTwiceWrittenOnce: a chunk of a large message is in the
// stream twice (under two stream sequences). The test system reads the
// message exactly, once.
func TestChunkPublishedTwiceWrittenOnce(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/twice")
	chunks, payload := bigMsg(c, 4, 22)
	e.publish(c.open("websocket"), chunks[0], chunks[1], withoutMsgID(chunks[1]), chunks[2], chunks[3], c.close())
	e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--ack-wait", "2s")
	e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
		return countKind(rs, "summary") >= 1
	})
	recs := srv.Records()
	if len(recs) != 1 || recs[0].SHA256 != digest(payload) {
		for _, r := range recs {
			t.Logf("record %d bytes, exact %v", r.Size, r.SHA256 == digest(payload))
		}
		t.Fatalf("test system read %d messages, want the message exactly once", len(recs))
	}
	if n := countResults(e.Results(), "message", "sent"); n != 1 {
		t.Fatalf("%d sent results, want 1", n)
	}
	waitAcked(t, e, "tapline-replay")
}

func countKind(rs []resultMsg, kind string) int {
	n := 0
	for _, r := range rs {
		if r.body.Kind == kind {
			n++
		}
	}
	return n
}

// TestChunkMissingWaitBounded: chunks held back for a missing one wait at
// most about an ack wait (redeliveries come within it), not until the
// connection idles out: the partly written message holds its test
// connection meanwhile. The message is then aborted and reported once.
func TestChunkMissingWaitBounded(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/order")
	chunks, _ := bigMsg(c, 4, 22)
	e.publish(c.open("websocket"), chunks[0], chunks[2])
	e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--ack-wait", "1s", "--conn-idle", "10m")
	deadline := time.Now().Add(30 * time.Second)
	for !abortedWith(srv) {
		if time.Now().After(deadline) {
			t.Fatalf("the partly written message was not aborted with status 1011 while its chunk 1 never came")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.publish(c.close())
	rs := e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
		return countKind(rs, "summary") >= 1
	})
	if n := len(srv.Records()); n != 0 {
		t.Fatalf("test system read %d messages, want none", n)
	}
	if n := countResults(rs, "message", "skipped"); n != 1 {
		t.Fatalf("%d skipped results, want 1", n)
	}
	waitAcked(t, e, "tapline-replay")
}

// TestCompressedMessageFinishedOnlyAtItsSize: a message that was
// permessage-deflate compressed on the wire (its chunks carry the inflated
// payload, and Tapline-Size counts it) whose last chunk would end it with
// another byte count than its Size is aborted, never finished: the size
// check holds for compressed messages too.
func TestCompressedMessageFinishedOnlyAtItsSize(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/deflate")
	chunks, _ := bigMsg(c, 3, 23)
	for _, ch := range chunks {
		ch.Header.Set(proto.HdrCompressed, "true")
	}
	last := chunks[len(chunks)-1]
	last.Header.Set(proto.HdrSize, strconv.Itoa(28*proto.MaxChunk))
	e.publish(append(append([]*nats.Msg{c.open("websocket")}, chunks...), c.close())...)
	e.startReplay(nil, "--target", srv.URL(), "--compare=false")
	rs := e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
		return countKind(rs, "summary") >= 1
	})
	if n := len(srv.Records()); n != 0 {
		t.Fatalf("test system read %d messages (%d bytes), want none: the message ends short of its size", n, srv.Records()[0].Size)
	}
	if n := countResults(rs, "message", "skipped"); n != 1 {
		t.Fatalf("%d skipped results, want 1", n)
	}
}
