package tcp

import (
	"encoding/json"
	"testing"

	"github.com/tapline/tapline/proto"
)

// TestRecordRestore: a connection closed idle is given to another
// tracker as a Record (through JSON, as the bucket keeps it). Fed the
// same packets again, the second tracker skips those up to the record's
// position and continues the connection at the next one exactly as the
// first tracker did: same id, same client, the streams continuing where
// they stopped.
func TestRecordRestore(t *testing.T) {
	frames := [][]byte{
		pkt(t, true, 99, "S", nil),
		pkt(t, false, 899, "SA", nil),
		pkt(t, true, 100, "PA", []byte("hello")),
		pkt(t, false, 900, "PA", []byte("world")),
	}
	later := pkt(t, false, 905, "PA", []byte("again"))
	a := newHarness(t, Config{IdleTimeout: 10 * 1e9})
	for i, f := range frames {
		a.tr.SetPos(uint64(i + 1))
		a.feed(f)
	}
	a.recs[0].conn.Carry = "state"
	a.tr.Expire(a.nowNs + 11e9)
	if a.recs[0].closed != CloseIdle {
		t.Fatalf("closed %q", a.recs[0].closed)
	}
	r := a.recs[0].conn.Record(CloseIdle, a.nowNs)
	a.nowNs += 11e9
	a.tr.SetPos(uint64(len(frames) + 1))
	a.feed(later)

	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got Record
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	b := newHarness(t, Config{IdleTimeout: 10 * 1e9})
	b.tr.Restore(&got, "state")
	for i, f := range frames {
		b.tr.SetPos(uint64(i + 1))
		b.feed(f)
	}
	if len(b.recs) != 0 || b.tr.Skipped != int64(len(frames)) {
		t.Fatalf("%d connections opened from skipped packets, %d skipped", len(b.recs), b.tr.Skipped)
	}
	b.nowNs = a.nowNs - int64(1e6) // feed adds 1 ms: the same capture time
	b.tr.SetPos(uint64(len(frames) + 1))
	b.feed(later)
	if len(b.recs) != 1 {
		t.Fatalf("%d connections", len(b.recs))
	}
	x, y := a.recs[1], b.recs[0]
	if y.conn.ID != x.conn.ID || y.conn.Resumed != "state" || y.conn.Client() != x.conn.Client() {
		t.Fatalf("continuation %s (resumed %v, client %v), first tracker's %s (client %v)", y.conn.ID, y.conn.Resumed, y.conn.Client(), x.conn.ID, x.conn.Client())
	}
	if !y.conn.Continued(proto.ServerToClient) || y.data[proto.ServerToClient].String() != "again" || len(y.events) != 0 {
		t.Fatalf("s2c %q, gaps %v", y.data[proto.ServerToClient].String(), y.events)
	}
}
