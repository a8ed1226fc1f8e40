package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// TestCongestion: a token bucket on the mirror link drops mirror packets
// while production is untouched. No incomplete message reaches the test
// system, every message it receives is byte-identical to production's, and
// the loss report accounts for what tc dropped.
func TestCongestion(t *testing.T) {
	needLab(t)
	// 20 Mbit/s with a 128 KB bucket and a 128 KB queue: a message of
	// 512 KB sent at veth speed overflows it, a 16 KB message sent with a
	// full bucket passes.
	lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true,
		TBF: &mirrorlab.TBF{Rate: "20mbit", Burst: "128kb", Limit: "128kb"}})
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false)
	p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String()})
	ts := ConnectTestSystem(t, p, replayListen)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	prod, sc := OpenFeed(ctx, t, lab, ext)

	// Messages stay below proto.MaxChunk so each is decided (complete or
	// not) on its only chunk: replay's skip policy then never starts one
	// it must abort.
	var sent []Msg
	push := func(size int64, settle bool) {
		t.Helper()
		m, err := send(ctx, sc.C, websocket.MessageBinary, payload("binary", uint64(len(sent)), size), 16<<10)
		if err != nil {
			t.Fatalf("production send: %v", err)
		}
		sent = append(sent, m)
		if _, err := prod.Wait(ctx, len(sent)); err != nil {
			t.Fatal(err)
		}
		if settle {
			// Traffic shaping, not synchronisation: let the bucket refill
			// (128 KB at 20 Mbit/s takes 52 ms) so the next message passes.
			time.Sleep(200 * time.Millisecond)
		}
	}
	for range 3 {
		push(16<<10, true)
	}
	for range 6 {
		push(512<<10, false)
	}
	time.Sleep(200 * time.Millisecond)
	for range 3 {
		push(16<<10, true)
	}
	requireSame(t, "production client", sent, prod.Msgs())
	_ = sc.C.Close(websocket.StatusNormalClosure, "done")

	// Every dropped packet is one inbound segment of this connection and
	// carries at most one MSS. All but a handful (SYN-ACK, pure ACKs of
	// the request and close, FIN) carry data, and as the messages are
	// written in 16 KiB frames at most one segment in eleven is not full:
	// half an MSS per dropped packet is a safe lower bound.
	const control = 8
	rep := p.Ledger(LedgerCheck{
		Prod:       []ledger.Production{production(sc.Remote, ext.Addr.String(), proto.ServerToClient, sent)},
		Deliveries: ts.Deliveries,
		Bounds: func(lost, tbf int64) *ledger.Bounds {
			return &ledger.Bounds{Lo: max(0, lost-control) * mss / 2, Hi: lost * mss,
				Why: fmt.Sprintf("%d packets lost on the mirror path (%d by tbf): (lost - %d) × %d / 2 .. lost × %d", lost, tbf, control, mss, mss)}
		},
	})
	checkReport(t, p, rep, proto.ServerToClient)
	cnt, err := lab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cnt.TBFDrops == 0 {
		t.Fatalf("the token bucket dropped nothing: the test did not congest the mirror")
	}
	if rep.Exact == 0 {
		t.Errorf("no message reassembled complete (the first passes a full bucket)")
	}
	if rep.Exact == len(sent) || rep.BytesMissing == 0 {
		t.Errorf("%d packets dropped but every message is exact or nothing is reported missing: %s", cnt.TBFDrops, rep.Summary())
	}
	requireSubsequence(t, sent, prodMsgsOf(ts))
	m, err := p.Metric("reassemble", "tapline_reassemble_gap_bytes_total")
	if err != nil {
		t.Fatal(err)
	}
	if int64(m) != rep.BytesMissing {
		t.Errorf("tapline_reassemble_gap_bytes_total = %v, close event says %d missing", m, rep.BytesMissing)
	}
	// The archive holds what crossed the bucket.
	requireArchiveComplete(t, p)
}

// requireSubsequence fails unless got is want with some messages left out
// (same order, each byte-identical).
func requireSubsequence(t testing.TB, want, got []Msg) {
	t.Helper()
	i := 0
	for j, g := range got {
		for i < len(want) && want[i] != g {
			i++
		}
		if i == len(want) {
			t.Fatalf("test system message %d (%v) is not one of production's messages in order", j, g)
		}
		i++
	}
}

// prodMsgsOf is what a test system collector received.
func prodMsgsOf(c *Collector) []Msg { return c.Msgs() }
