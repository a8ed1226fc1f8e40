package replay

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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

// TestChunksOutOfOrderNeverFinished: the chunks of a large message reach
// replay out of order (as redeliveries after a crash can). Replay must not
// write them in arrival order and finish the message — the test system
// would read a complete message with other bytes. It aborts it and reports
// it skipped, once.
func TestChunksOutOfOrderNeverFinished(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/order")
	chunks, payload := bigMsg(c, 4, 21)
	e.publish(c.open("websocket"), chunks[0], chunks[2], chunks[1], chunks[3], c.close())
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
