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

// TestMidStream: mirroring starts (the tc mirred filters are added) after
// the WebSocket connection was established and messages flowed. The
// messages sent after that reach the test system complete and
// byte-identical, and the open event says mid_stream.
func TestMidStream(t *testing.T) {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{DeferMirror: true})
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false)
	p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String()})
	ts := ConnectTestSystem(t, p, replayListen)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	prod, sc := OpenFeed(ctx, t, lab, ext)
	var sent []Msg
	push := func(typ websocket.MessageType, kind string, size int64) {
		t.Helper()
		m, err := send(ctx, sc.C, typ, payload(kind, uint64(len(sent)), size), 16<<10)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
		if _, err := prod.Wait(ctx, len(sent)); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		push(websocket.MessageBinary, "binary", 64<<10)
	}
	before := len(sent)
	if err := lab.StartMirror(); err != nil {
		t.Fatal(err)
	}
	push(websocket.MessageText, "text", 1<<10)
	push(websocket.MessageBinary, "binary", 100<<10)
	push(websocket.MessageBinary, "binary", 2<<20)
	push(websocket.MessageText, "text", 300<<10)
	push(websocket.MessageBinary, "binary", 10)
	_ = sc.C.Close(websocket.StatusNormalClosure, "done")

	later := sent[before:]
	got, err := ts.Wait(ctx, len(later))
	if err != nil {
		t.Fatalf("test system: %v", err)
	}
	requireSame(t, "test system", later, got)

	p.Ledger(LedgerCheck{
		Prod:       []ledger.Production{production(sc.Remote, ext.Addr.String(), proto.ServerToClient, later)},
		Deliveries: ts.Deliveries,
	})
	es, err := p.Entries()
	if err != nil {
		t.Fatal(err)
	}
	opens := 0
	for _, e := range es {
		if e.Open != nil {
			opens++
			if !e.Open.MidStream {
				t.Errorf("open event %+v: want mid_stream", *e.Open)
			}
			if e.Open.Server != ext.Addr.String() {
				t.Errorf("open event server %q, want %s (the side that sends the server's messages)", e.Open.Server, ext.Addr)
			}
		}
	}
	if opens != 1 {
		t.Errorf("%d open events, want 1", opens)
	}
	requireArchiveComplete(t, p)
}
