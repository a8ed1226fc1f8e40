package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// TestReplayRestartAfterGap: one connection loses mirror packets (a gap
// event on the messages stream), then replay (listen mode) is killed with
// SIGKILL and restarted; the messages the connection sends afterwards still
// reach the test system. (The narrow case of the replay problem TestFaults
// can skip on; this sequence alone does not reproduce it.)
func TestReplayRestartAfterGap(t *testing.T) {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true,
		TBF: &mirrorlab.TBF{Rate: "20mbit", Burst: "128kb", Limit: "128kb"}})
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false)
	p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String()})
	ts := ConnectReconnecting(t, p, replayListen)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	prod, sc := OpenFeed(ctx, t, lab, ext)
	var sent []Msg
	push := func(size int64) {
		t.Helper()
		m, err := send(ctx, sc.C, websocket.MessageBinary, payload("binary", uint64(len(sent)+1000), size), 16<<10)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
		if _, err := prod.Wait(ctx, len(sent)); err != nil {
			t.Fatal(err)
		}
		// Let the token bucket refill (traffic shaping, as in
		// TestCongestion) so small messages pass whole.
		time.Sleep(200 * time.Millisecond)
	}
	push(16 << 10)
	push(512 << 10) // overflows the bucket: a gap
	push(512 << 10)
	// More than --reorder-window (1 MiB) after the hole, so the
	// reassembler declares the gap now rather than at the end.
	for range 14 {
		push(96 << 10)
	}
	waitFor(t, time.Minute, "the first messages at the test system", func() error {
		if len(ts.Msgs()) < 5 {
			return errShort
		}
		return nil
	})
	p.Procs["replay"].Kill9()
	p.StartStage("replay")
	later := len(sent)
	for range 3 {
		push(16 << 10)
	}
	waitFor(t, 2*time.Minute, "the messages sent after replay's restart", func() error {
		seen := map[string]bool{}
		for _, m := range ts.Msgs() {
			seen[m.SHA] = true
		}
		for _, m := range sent[later:] {
			if !seen[m.SHA] {
				return errShort
			}
		}
		return nil
	})
	_ = sc.C.Close(websocket.StatusNormalClosure, "done")
	p.Ledger(LedgerCheck{
		Prod:       []ledger.Production{production(sc.Remote, ext.Addr.String(), proto.ServerToClient, sent)},
		Deliveries: ts.Deliveries,
	})
}

type shortErr struct{}

func (shortErr) Error() string { return "not all messages received yet" }

var errShort error = shortErr{}
