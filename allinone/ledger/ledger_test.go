package ledger

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay"
)

// fixture builds a stream, results and test-system view of one
// connection (s2c) the way the stages would.
type fixture struct {
	t    *testing.T
	s    *Stream
	res  *Results
	got  []Delivery
	seq  uint64
	key  Key
	conn string
	n    uint64 // stream sequence
	miss int64
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, s: NewStream(), res: NewResults(), key: Key{Client: "10.0.0.2:5000", Server: "10.0.0.1:80"}, conn: "c1"}
	f.event(proto.KindOpen, proto.OpenEvent{Conn: f.conn, Client: f.key.Client, Server: f.key.Server, Protocol: "websocket"})
	return f
}

func (f *fixture) event(kind proto.Kind, body any) {
	m, err := proto.EventMsg("x", kind, f.conn, 1, "", body)
	if err != nil {
		f.t.Fatal(err)
	}
	f.n++
	if err := f.s.Add(m.Header, m.Data, f.n); err != nil {
		f.t.Fatal(err)
	}
}

// msg publishes one message in chunks of 4 bytes; reason != "" flags it.
func (f *fixture) msg(payload []byte, reason string, deliver bool) {
	f.seq++
	for i := 0; ; i++ {
		lo, hi := i*4, min(i*4+4, len(payload))
		c := proto.Chunk{Conn: f.conn, Client: f.key.Client, Server: f.key.Server, Dir: proto.ServerToClient,
			Seq: f.seq, Index: i, Last: hi == len(payload), Opcode: proto.OpBinary, Complete: reason == "", Reason: reason}
		if c.Last {
			c.Size = int64(len(payload))
		}
		f.n++
		if err := f.s.Add(nats.Header(c.Header()), payload[lo:hi], f.n); err != nil {
			f.t.Fatal(err)
		}
		if c.Last {
			break
		}
	}
	result := "sent"
	if reason != "" {
		result = "skipped"
	}
	b, _ := json.Marshal(replay.Result{Kind: "message", Conn: f.conn, Dir: proto.ServerToClient, Seq: f.seq, Result: result})
	if err := f.res.AddResult(b); err != nil {
		f.t.Fatal(err)
	}
	if deliver {
		f.got = append(f.got, Delivery{Msg: NewMsg(proto.OpBinary, payload)})
	}
}

func (f *fixture) gap(bytes int64) {
	f.miss += bytes
	f.event(proto.KindGap, proto.GapEvent{Conn: f.conn, Dir: proto.ServerToClient, Bytes: bytes, Reason: "mirror loss"})
}

func (f *fixture) close(complete, incomplete int64) {
	f.event(proto.KindClose, proto.CloseEvent{Conn: f.conn, Reason: "fin",
		S2C: proto.DirLoss{BytesImplied: 1000 + f.miss, BytesSeen: 1000, BytesMissing: f.miss, MessagesComplete: complete, MessagesIncomplete: incomplete}})
	b, _ := json.Marshal(replay.Result{Kind: "summary", Conn: f.conn, Result: "sent", Summary: &replay.ConnSummary{End: "close"}})
	_ = f.res.AddResult(b)
}

func (f *fixture) reconcile(prod [][]byte, b *Bounds) *Report {
	p := Production{Key: f.key, Dir: proto.ServerToClient}
	for _, m := range prod {
		p.Msgs = append(p.Msgs, NewMsg(proto.OpBinary, m))
	}
	r := Reconcile([]Production{p}, f.s, f.res, f.got, Options{Bounds: b})
	f.t.Log(r)
	return r
}

func msgs(n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, []byte(fmt.Sprintf("message number %d of the test", i)))
	}
	return out
}

func wantClasses(t *testing.T, r *Report, want map[string]int) {
	t.Helper()
	got := r.Classes()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("violations by class %v, want %v", got, want)
	}
}

func TestBalanced(t *testing.T) {
	f := newFixture(t)
	p := msgs(5)
	f.msg(p[0], "", true)
	f.gap(40)
	f.msg(p[1][:10], proto.ReasonGap, false) // flagged
	// p[2] wholly inside the gap: lost
	f.msg(p[3], "", true)
	f.msg(p[4], "", true)
	f.close(3, 1)
	r := f.reconcile(p, &Bounds{Lo: 10, Hi: 100})
	wantClasses(t, r, map[string]int{})
	if r.Exact != 3 || r.Flagged[proto.ReasonGap] != 1 || r.Lost != 1 || r.BytesMissing != 40 {
		t.Errorf("figures %s", r.Summary())
	}
}

func TestTruncatedPrefixDeliveredComplete(t *testing.T) {
	f := newFixture(t)
	p := msgs(3)
	f.msg(p[0], "", true)
	f.msg(p[1][:12], "", true) // a prefix reported complete and delivered
	f.msg(p[2], "", true)
	f.close(3, 0)
	r := f.reconcile(p, nil)
	// The prefix is no production message (stream and test system), and
	// production message 1 is unaccounted.
	wantClasses(t, r, map[string]int{ClassNeverSent: 2, ClassUnaccounted: 1})
}

func TestSilentLossAndDuplicate(t *testing.T) {
	f := newFixture(t)
	p := msgs(4)
	f.msg(p[0], "", true)
	f.msg(p[2], "", true) // p[1] vanished without a gap or flag
	f.got = append(f.got, f.got[len(f.got)-1])
	f.msg(p[3], "", false) // exact, never delivered, result says sent
	f.close(2, 0)          // wrong count: the stream holds 3
	r := f.reconcile(p, nil)
	wantClasses(t, r, map[string]int{ClassUnaccounted: 1, ClassTwice: 1, ClassTestSystem: 1, ClassResults: 1, ClassClose: 1})
	if !strings.Contains(r.String(), "message 1") {
		t.Errorf("the report does not name production message 1:\n%s", r)
	}
}

func TestLossReportBounds(t *testing.T) {
	f := newFixture(t)
	p := msgs(2)
	f.msg(p[0], "", true)
	f.gap(5000)
	f.msg(p[1], "", true)
	f.close(2, 0)
	r := f.reconcile(p, &Bounds{Lo: 0, Hi: 1460, Why: "1 packet dropped"})
	wantClasses(t, r, map[string]int{ClassLossReport: 1})
	// A flagged message with no loss reported and no production message.
	f = newFixture(t)
	f.msg(p[0], "", true)
	f.msg([]byte("junk"), proto.ReasonBadFrame, false)
	f.msg(p[1], "", true)
	f.close(2, 1)
	wantClasses(t, f.reconcile(p, nil), map[string]int{ClassExtraFlag: 1})
}

func TestNoClose(t *testing.T) {
	f := newFixture(t)
	p := msgs(2)
	f.msg(p[0], "", true)
	r := f.reconcile(p, nil)
	wantClasses(t, r, map[string]int{ClassUnaccounted: 1, ClassClose: 1, ClassResults: 1})
}

// TestInDoubtReported: replay's explicit in-doubt result (it stopped after
// writing a message and before the test system confirmed it) accounts for
// an exact message the test system did not receive, and is no violation
// when it did receive it once; a "sent" result for the same loss, or an
// in-doubt message received twice, still is.
func TestInDoubtReported(t *testing.T) {
	f := newFixture(t)
	p := msgs(4)
	f.msg(p[0], "", true)
	f.msgResult(p[1], replay.ResultInDoubt, false) // not received: reported
	f.msgResult(p[2], replay.ResultInDoubt, true)  // received once: fine
	f.msg(p[3], "", false)                         // not received, result sent: a violation
	f.close(4, 0)
	r := f.reconcile(p, nil)
	wantClasses(t, r, map[string]int{ClassTestSystem: 1, ClassResults: 1})
	if r.InDoubt != 1 || !strings.Contains(r.Summary(), "1 in doubt") {
		t.Errorf("in doubt %d, want 1: %s", r.InDoubt, r.Summary())
	}
	f = newFixture(t)
	f.msgResult(p[0], replay.ResultInDoubt, true)
	f.got = append(f.got, f.got[0])
	f.close(1, 0)
	wantClasses(t, f.reconcile(p[:1], nil), map[string]int{ClassTwice: 1})
}

// msgResult is msg with the result replay published last.
func (f *fixture) msgResult(payload []byte, result string, deliver bool) {
	f.msg(payload, "", deliver)
	b, _ := json.Marshal(replay.Result{Kind: "message", Conn: f.conn, Dir: proto.ServerToClient, Seq: f.seq, Result: result})
	if err := f.res.AddResult(b); err != nil {
		f.t.Fatal(err)
	}
}
