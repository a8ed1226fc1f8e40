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

const replayListen = "10.77.2.2:9001"

// TestMotivatingCase: an external system pushes 1 MB, 10 MB and 100 MB
// WebSocket messages to a production client at full speed; only inbound
// traffic is mirrored; the test system connected to replay's listen
// address receives every message byte-identical, and the archive holds
// every mirrored packet.
func TestMotivatingCase(t *testing.T) {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true})
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false)
	p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String()})
	ts := ConnectTestSystem(t, p, replayListen)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	prod, sc := OpenFeed(ctx, t, lab, ext)
	var sent []Msg
	for i, size := range []int64{1 << 20, 10 << 20, 100 << 20} {
		m, err := send(ctx, sc.C, websocket.MessageBinary, payload("binary", uint64(i), size), 64<<10)
		if err != nil {
			t.Fatalf("production send %d: %v", i, err)
		}
		sent = append(sent, m)
	}
	got, err := prod.Wait(ctx, len(sent))
	if err != nil {
		t.Fatal(err)
	}
	requireSame(t, "production client", sent, got)
	_ = sc.C.Close(websocket.StatusNormalClosure, "done")

	tsGot, err := ts.Wait(ctx, len(sent))
	if err != nil {
		t.Fatalf("test system: %v", err)
	}
	requireSame(t, "test system", sent, tsGot)

	// The ledger balances with every message exact.
	rep := p.Ledger(LedgerCheck{
		Prod:       []ledger.Production{production(sc.Remote, ext.Addr.String(), proto.ServerToClient, sent)},
		Deliveries: ts.Deliveries,
	})
	if rep.Exact != len(sent) || rep.BytesMissing != 0 {
		t.Errorf("%s: want every message exact and nothing missing", rep.Summary())
	}

	// The archive holds every packet the kernel mirrored.
	requireArchiveComplete(t, p)
}

// requireSame fails unless got equals want (type, size, SHA-256), in order.
func requireSame(t testing.TB, who string, want, got []Msg) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s received %d messages, want %d", who, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s message %d = %v, want %v", who, i, got[i], want[i])
		}
	}
}

// waitClose waits until n close events are on the messages stream and
// returns them.
func waitClose(t testing.TB, p *Pipeline, n int) []*proto.CloseEvent {
	t.Helper()
	var closes []*proto.CloseEvent
	start := time.Now()
	defer func() { t.Logf("%d close events after %v", len(closes), time.Since(start).Round(time.Millisecond)) }()
	waitFor(t, 3*time.Minute, "close events", func() error {
		es, err := p.Entries()
		if err != nil {
			return err
		}
		closes = closes[:0]
		for _, e := range es {
			if e.Close != nil {
				closes = append(closes, e.Close)
			}
		}
		if len(closes) < n {
			time.Sleep(time.Second)
			return fmt.Errorf("%d of %d close events", len(closes), n)
		}
		return nil
	})
	return closes
}

// requireArchiveComplete waits until the archive holds as many packets as
// the kernel sent on the mirror link (all of them when the target's UDP
// sockets dropped none).
func requireArchiveComplete(t testing.TB, p *Pipeline) {
	t.Helper()
	var last string
	waitFor(t, 3*time.Minute, "archive complete", func() error {
		c, err := p.Lab.Counters()
		if err != nil {
			return err
		}
		n, err := p.ArchivePackets()
		if err != nil {
			return err
		}
		want := c.Sent - c.TargetUDP.RcvbufErrors
		last = fmt.Sprintf("archive %d packets, mirror sent %d, target rcvbuf drops %d", n, c.Sent, c.TargetUDP.RcvbufErrors)
		if uint64(n) != want {
			time.Sleep(500 * time.Millisecond)
			return fmt.Errorf("%s", last)
		}
		if c.TargetUDP.RcvbufErrors != 0 {
			t.Errorf("target UDP sockets dropped %d datagrams", c.TargetUDP.RcvbufErrors)
		}
		return nil
	})
	t.Log(last)
}
