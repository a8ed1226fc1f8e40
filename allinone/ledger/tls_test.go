package ledger

import (
	"encoding/json"
	"testing"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay"
)

// closeTLS is close with the TLS record account of the server's
// direction.
func (f *fixture) closeTLS(complete, incomplete int64, s2c proto.TLSLoss) {
	f.event(proto.KindClose, proto.CloseEvent{Conn: f.conn, Reason: "fin",
		S2C: proto.DirLoss{BytesImplied: 1000 + f.miss, BytesSeen: 1000, BytesMissing: f.miss, MessagesComplete: complete, MessagesIncomplete: incomplete},
		TLS: &proto.TLSClose{Undecryptable: s2c.RecordsUndecryptable > 0, S2C: s2c}})
	b, _ := json.Marshal(replay.Result{Kind: "summary", Conn: f.conn, Result: "sent", Summary: &replay.ConnSummary{End: "close"}})
	_ = f.res.AddResult(b)
}

// TestTLSUndecryptableReported: messages of a TLS connection whose keys
// never came are not in the stream and no gap covers them, but the close
// event reports the direction's records undecryptable: they are reported,
// not unaccounted. Without that report they still are unaccounted.
func TestTLSUndecryptableReported(t *testing.T) {
	p := msgs(3)
	f := newFixture(t)
	f.closeTLS(0, 0, proto.TLSLoss{RecordsUndecryptable: 40, PlaintextLost: 500})
	r := f.reconcile(p, &Bounds{Lo: 0, Hi: 0})
	wantClasses(t, r, map[string]int{})
	if r.Undecryptable != 3 || r.Exact != 0 || r.Lost != 0 {
		t.Errorf("figures %s: want 3 undecryptable", r.Summary())
	}

	// Keys that came late for the first message only: it is exact, the
	// rest reported undecryptable.
	f = newFixture(t)
	f.msg(p[0], "", true)
	f.closeTLS(1, 0, proto.TLSLoss{Records: 2, RecordsUndecryptable: 4, PlaintextLost: 100})
	r = f.reconcile(p, nil)
	wantClasses(t, r, map[string]int{})
	if r.Undecryptable != 2 || r.Exact != 1 {
		t.Errorf("figures %s: want 1 exact, 2 undecryptable", r.Summary())
	}

	// Every record decrypted: a missing message is unaccounted.
	f = newFixture(t)
	f.msg(p[0], "", true)
	f.msg(p[2], "", true)
	f.closeTLS(2, 0, proto.TLSLoss{Records: 9})
	wantClasses(t, f.reconcile(p, nil), map[string]int{ClassUnaccounted: 1})
}
