package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

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

	closeEv := waitClose(t, p, 1)[0]
	es, err := p.Entries()
	if err != nil {
		t.Fatal(err)
	}
	// complete and incomplete count binary messages (what the test
	// system can get); allComplete and allIncomplete every s2c message
	// (the close frame too), as the close event does.
	var complete, incomplete, allComplete, allIncomplete int
	var gapBytes int64
	for _, e := range es {
		switch {
		case e.Kind == proto.KindData && e.Chunk.Dir == proto.ServerToClient && e.Chunk.Last:
			if e.Chunk.Complete {
				allComplete++
			} else {
				allIncomplete++
			}
			if e.Chunk.Opcode != proto.OpBinary {
				continue
			}
			if e.Chunk.Complete {
				complete++
			} else {
				incomplete++
			}
		case e.Gap != nil && e.Gap.Dir == proto.ServerToClient:
			gapBytes += e.Gap.Bytes
		}
	}
	t.Logf("messages: %d sent, %d complete, %d incomplete; close s2c %+v; gap events %d bytes", len(sent), complete, incomplete, closeEv.S2C, gapBytes)
	if complete == 0 {
		t.Errorf("no message reassembled complete (the first passes a full bucket)")
	}

	// The test system gets exactly the complete messages, each
	// byte-identical to production's, in order.
	got, err := ts.Wait(ctx, complete)
	if err != nil {
		t.Fatalf("test system: %v", err)
	}
	requireSubsequence(t, sent, got)

	// The loss report against the kernel's count of dropped packets.
	cnt, err := lab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	drops := cnt.TBFDrops + cnt.TargetUDP.RcvbufErrors
	missing := closeEv.S2C.BytesMissing
	t.Logf("tbf drops %d, target rcvbuf drops %d, mirror sent %d; bytes missing %d", cnt.TBFDrops, cnt.TargetUDP.RcvbufErrors, cnt.Sent, missing)
	if cnt.TBFDrops == 0 {
		t.Fatalf("the token bucket dropped nothing: the test did not congest the mirror")
	}
	if missing <= 0 {
		t.Errorf("tc dropped %d mirror packets but the close event reports %d bytes missing", drops, missing)
	}
	// Every dropped packet is one inbound segment of this connection and
	// carries at most one MSS (MTU 1500 - 40 bytes of headers). All but a
	// handful (SYN-ACK, pure ACKs of the request and close, FIN) carry
	// data, and as the messages are written in 16 KiB frames at most one
	// segment in eleven is not full: half an MSS per dropped packet is a
	// safe lower bound.
	const mss = 1460
	const control = 8
	if missing > int64(drops)*mss {
		t.Errorf("bytes missing %d > %d dropped packets × %d", missing, drops, mss)
	}
	if lo := (int64(drops) - control) * mss / 2; missing < lo {
		t.Errorf("bytes missing %d < (%d dropped packets - %d) × %d / 2 = %d", missing, drops, control, mss, lo)
	}
	if closeEv.S2C.BytesImplied-closeEv.S2C.BytesSeen != missing {
		t.Errorf("close event s2c inconsistent: implied %d - seen %d != missing %d", closeEv.S2C.BytesImplied, closeEv.S2C.BytesSeen, missing)
	}
	if gapBytes != missing {
		t.Errorf("gap events total %d bytes, close event says %d missing", gapBytes, missing)
	}
	if int64(allIncomplete) != closeEv.S2C.MessagesIncomplete || int64(allComplete) != closeEv.S2C.MessagesComplete {
		t.Errorf("close event counts %d complete / %d incomplete, the stream has %d / %d",
			closeEv.S2C.MessagesComplete, closeEv.S2C.MessagesIncomplete, allComplete, allIncomplete)
	}
	if incomplete == 0 {
		t.Errorf("%d packets dropped but no message is incomplete", drops)
	}
	m, err := p.Metric("reassemble", "tapline_reassemble_gap_bytes_total")
	if err != nil {
		t.Fatal(err)
	}
	if int64(m) != missing {
		t.Errorf("tapline_reassemble_gap_bytes_total = %v, close event says %d missing", m, missing)
	}
	var skipped float64
	waitFor(t, time.Minute, "replay to account every incomplete message", func() (err error) {
		skipped, err = p.Metric("replay", "tapline_replay_incomplete_total", `"skipped"`)
		if err == nil && int(skipped) < allIncomplete {
			err = fmt.Errorf("replay skipped %v of %d incomplete messages", skipped, allIncomplete)
		}
		return err
	})
	if int(skipped) != allIncomplete {
		t.Errorf("replay skipped %v incomplete messages, the stream has %d", skipped, incomplete)
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
