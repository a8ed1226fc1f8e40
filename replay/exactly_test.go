package replay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// TestCrashNeverSendsTwice crashes replay (abandons it: nothing is
// confirmed, acknowledged or handed back) while the test system has read
// messages replay has not yet confirmed (confirmations are delayed), then
// starts another replay on the durable. No message may reach the test
// system twice, and every message either reaches it or is reported
// in-doubt; each has a result.
func TestCrashNeverSendsTwice(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	const nConns, nMsgs = 3, 150
	var all []*nats.Msg
	for i := range nConns {
		c := newConv(i, fmt.Sprintf("/x/%d", i))
		for k := 1; k <= nMsgs; k++ {
			c.add(proto.ClientToServer, proto.OpText, []byte(fmt.Sprintf("%d/%d", i, k)))
		}
		all = append(all, c.entries("websocket")...)
	}
	e.publish(all...)
	args := []string{"--target", srv.URL(), "--compare=false", "--rate-msgs", "300", "--ack-wait", "2s"}
	first := e.startReplay(func(c *Config) { c.noNakOnStop, c.confirmDelay = true, 700*time.Millisecond }, args...)
	srv.Wait(t, 60*time.Second, "some messages", func(rs []testsys.Record) bool { return len(rs) >= nConns*nMsgs/3 })
	first.stop(t)
	before := len(srv.Records())
	e.startReplay(nil, args...)
	rs := e.waitResults(120*time.Second, "every connection's summary", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "sent") == nConns
	})
	got := map[string]int{}
	for _, r := range srv.Records() {
		got[string(r.Payload)]++
	}
	doubt := map[string]bool{}
	last := map[string]string{}
	for _, r := range rs {
		if r.body.Kind != "message" || r.body.Seq == 0 {
			continue
		}
		id := fmt.Sprintf("%s/%d", strings.TrimPrefix(r.body.Conn, "conn-00"), r.body.Seq)
		last[id] = r.body.Result
		if r.body.Result == ResultInDoubt {
			doubt[id] = true
		}
	}
	for i := range nConns {
		for k := 1; k <= nMsgs; k++ {
			id := fmt.Sprintf("%d/%d", i, k)
			switch {
			case got[id] > 1:
				t.Errorf("message %s reached the test system %d times", id, got[id])
			case got[id] == 0 && !doubt[id]:
				t.Errorf("message %s never reached the test system and was not reported in doubt (last result %q)", id, last[id])
			case last[id] != "sent" && last[id] != ResultInDoubt:
				t.Errorf("message %s: last result %q", id, last[id])
			}
		}
	}
	t.Logf("%d messages read before the crash, %d after; %d reported in doubt", before, len(srv.Records())-before, len(doubt))
	if len(doubt) == 0 {
		t.Errorf("no message in doubt: the crash did not find unconfirmed messages, the test proves nothing")
	}
	waitAcked(t, e, "tapline-replay")
}

// TestReusedSeqNotTakenForDelivered: after a connection's messages were
// delivered (and recorded in the delivery ledger), later entries of the
// same connection reuse their seqs with other payloads (as a reassembler
// restarted inside a connection can publish). They are later in the
// stream than anything recorded, so they are delivered, not acknowledged
// as already handled.
func TestReusedSeqNotTakenForDelivered(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/reuse")
	for _, p := range []string{"a", "b", "c"} {
		c.add(proto.ClientToServer, proto.OpText, []byte(p))
	}
	e.publish(c.entries("websocket")[:4]...) // open and the three messages
	e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--conn-idle", "500ms")
	srv.Wait(t, 30*time.Second, "the first messages", func(rs []testsys.Record) bool { return len(rs) == 3 })
	waitAcked(t, e, "tapline-replay")
	again := newConv(1, "/reuse")
	for _, p := range []string{"d", "e"} {
		again.add(proto.ClientToServer, proto.OpText, []byte(p))
	}
	var msgs []*nats.Msg
	for _, m := range again.msgs {
		for ch := range m.Chunks() {
			msgs = append(msgs, withoutMsgID(ch))
		}
	}
	e.publish(append(msgs, c.close())...)
	recs := srv.Wait(t, 30*time.Second, "the messages reusing seqs 1 and 2", func(rs []testsys.Record) bool { return len(rs) == 5 })
	if string(recs[3].Payload) != "d" || string(recs[4].Payload) != "e" {
		t.Fatalf("test system got %q, %q after the first messages, want d, e", recs[3].Payload, recs[4].Payload)
	}
	waitAcked(t, e, "tapline-replay")
}
