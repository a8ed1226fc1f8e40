package replay

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
	"github.com/tapline/tapline/replay/replaytest"
)

// TestConnectionResumesWithoutItsOpenEvent: a connection idles out of
// replay (its open event is acknowledged), replay is restarted, and the
// connection goes on with a gap and more messages. The new replay's first
// entry of the connection is the gap event; it recovers the open event
// from the stream, so the later messages are delivered, on the original
// path, instead of the connection being filtered as started before
// replay.
func TestConnectionResumesWithoutItsOpenEvent(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/resume?x=1")
	c.add(proto.ClientToServer, proto.OpText, []byte("first"))
	m2 := c.add(proto.ClientToServer, proto.OpText, []byte("after the gap"))
	e.publish(c.open("websocket"))
	for ch := range c.msgs[0].Chunks() {
		e.publish(ch)
	}
	args := []string{"--target", srv.URL(), "--compare=false", "--conn-idle", "500ms", "--ack-wait", "2s"}
	first := e.startReplay(nil, args...)
	e.waitResults(30*time.Second, "the idle summary", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "sent") == 1
	})
	waitAcked(t, e, "tapline-replay") // the open event too
	first.stop(t)
	e.startReplay(nil, args...)
	e.publish(replaytest.Gap(c.vni, c.shard, proto.GapEvent{Conn: c.id, Dir: proto.ServerToClient, Offset: 100, Bytes: 10}))
	for ch := range m2.Chunks() {
		e.publish(ch)
	}
	e.publish(c.close())
	recs := srv.Wait(t, 30*time.Second, "the message after the gap", func(rs []testsys.Record) bool { return len(rs) == 2 })
	if string(recs[1].Payload) != "after the gap" || recs[1].Path != "/resume?x=1" {
		t.Fatalf("second message %q on %s, want %q on /resume?x=1", recs[1].Payload, recs[1].Path, "after the gap")
	}
	for _, r := range e.Results() {
		if r.body.Kind == "summary" && r.body.Result == "skipped" {
			t.Fatalf("connection filtered: %s", r.body.Reason)
		}
	}
	waitAcked(t, e, "tapline-replay")
}

// TestMessageAfterCloseReported: a message entry that comes after its
// connection's close event (as redeliveries out of order can) is not
// dropped silently: it is either delivered or reported failed with why.
func TestMessageAfterCloseReported(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/late")
	m := c.add(proto.ClientToServer, proto.OpText, []byte("late"))
	msgs := []*nats.Msg{c.open("websocket"), c.close()}
	for ch := range m.Chunks() {
		msgs = append(msgs, ch)
	}
	e.publish(msgs...)
	e.startReplay(nil, "--target", srv.URL(), "--compare=false")
	waitAcked(t, e, "tapline-replay")
	e.waitResults(30*time.Second, "the late message delivered or reported", func(rs []resultMsg) bool {
		if len(srv.Records()) == 1 {
			return true
		}
		for _, r := range rs {
			if r.body.Kind == "message" && r.body.Seq == 1 && r.body.Result == "failed" && strings.Contains(r.body.Reason, "after the connection's close") {
				return true
			}
		}
		return false
	})
}

// TestEarlierMessageAfterCloseDelivered: redeliveries out of order put an
// earlier message of a connection behind its close event (here in the
// stream itself: message 2, the close event, then message 1). It was never
// delivered, so it must not be dropped as a stale duplicate: the test
// system gets both messages, once each, and both are reported sent.
func TestEarlierMessageAfterCloseDelivered(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/late")
	m1 := c.add(proto.ClientToServer, proto.OpText, []byte("one"))
	m2 := c.add(proto.ClientToServer, proto.OpText, []byte("two"))
	msgs := []*nats.Msg{c.open("websocket")}
	for _, m := range []*replaytest.Message{m2} {
		for ch := range m.Chunks() {
			msgs = append(msgs, ch)
		}
	}
	msgs = append(msgs, c.close())
	for ch := range m1.Chunks() {
		msgs = append(msgs, ch)
	}
	e.publish(msgs...)
	e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--conn-idle", "1s")
	waitAcked(t, e, "tapline-replay")
	e.waitResults(30*time.Second, "both messages reported", func(rs []resultMsg) bool {
		n := map[uint64]bool{}
		for _, r := range rs {
			if r.body.Kind == "message" && r.body.Result == "sent" {
				n[r.body.Seq] = true
			}
		}
		return n[1] && n[2]
	})
	got := map[string]int{}
	for _, r := range srv.Records() {
		got[string(r.Payload)]++
	}
	if got["one"] != 1 || got["two"] != 1 {
		t.Fatalf("test system got %v, want one and two once each", got)
	}
}

// TestGapBeforeOpenNotFiltered: in listen mode a connection's gap event
// reaches replay before its open event (redeliveries out of order). The
// gap names no server, so deciding on it would filter the connection and
// acknowledge its messages unreported; replay decides on the open event
// instead, and the message reaches the test system.
func TestGapBeforeOpenNotFiltered(t *testing.T) {
	e := newEnv(t)
	addrCh := make(chan string, 1)
	e.startReplay(func(c *Config) { c.onListen = func(_, a string) { addrCh <- a } }, "--listen", "127.0.0.1:0=10.1.0.1:443")
	cl := testsys.Dial(t, "ws://"+<-addrCh+"/")
	c := newConv(1, "/feed")
	m := c.add(proto.ServerToClient, proto.OpText, []byte("after the gap"))
	msgs := []*nats.Msg{replaytest.Gap(c.vni, c.shard, proto.GapEvent{Conn: c.id, Dir: proto.ServerToClient, Offset: 0, Bytes: 10}), c.open("websocket")}
	for ch := range m.Chunks() {
		msgs = append(msgs, ch)
	}
	e.publish(append(msgs, c.close())...)
	rs := e.waitResults(30*time.Second, "the connection summary", func(rs []resultMsg) bool { return countKind(rs, "summary") >= 1 })
	if recs := cl.Records(); len(recs) != 1 || string(recs[0].Payload) != "after the gap" {
		for _, r := range rs {
			t.Logf("result %+v", r.body)
		}
		t.Fatalf("test system read %d messages, want the message after the gap", len(recs))
	}
	waitAcked(t, e, "tapline-replay")
}
