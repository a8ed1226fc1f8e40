package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// TestCaptureNATSOutage: the central NATS is stopped for 30 s while the
// external system pushes the seed messages; decap capture keeps them in
// its spool and, once NATS is back, all three reach the test system
// byte-identical.
func TestCaptureNATSOutage(t *testing.T) {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true, TBF: seedTBF, DeferMirror: true})
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false)
	p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String(), NATSHost: "0.0.0.0"})
	ts := ConnectReconnecting(t, p, replayListen)
	startCapture(t, p, ext, filepath.Join(p.Dir, "spool"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	p.Procs["nats"].Stop()
	down := time.Now()
	sent, sc, _ := pushSeed(ctx, t, lab, ext)
	_ = sc.C.Close(websocket.StatusNormalClosure, "done")
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	held, err := captureMetric(p, "tapline_capture_spool_bytes")
	if err != nil {
		t.Fatal(err)
	}
	if held < 100e6 {
		t.Errorf("the spool holds %.0f bytes after 30 s without NATS, want the whole push (over 100 MB)", held)
	}
	p.StartNATS()
	rep := p.Ledger(LedgerCheck{
		Prod:       []ledger.Production{production(sc.Remote, ext.Addr.String(), proto.ServerToClient, sent)},
		Deliveries: ts.Deliveries,
		Bounds:     noLoss,
	})
	if rep.Exact != len(sent) || rep.BytesMissing != 0 {
		t.Errorf("capture mode lost or flagged a message across a NATS outage: %s", rep.Summary())
	}
	requireSame(t, "test system", sent, ts.Msgs())
	peak, _ := captureMetric(p, "tapline_capture_spool_peak_bytes")
	delay, _ := captureMetric(p, "tapline_capture_upload_delay_max_seconds")
	t.Logf("NATS down 30 s: spool held %.1f MB (peak %.1f MB), added delay max %.1f s; %s", held/1e6, peak/1e6, delay, rep.Summary())
}

// TestCaptureKill9: decap capture is killed with SIGKILL while its spool
// still holds a pushed message that was not uploaded yet, a message is
// pushed while it is down, and it is started again. The message spooled
// before the kill is delivered byte-identical (nothing spooled is lost);
// the one pushed while capture was down is not delivered as complete, the
// bytes missing are reported, and the restarted capture reports the span
// it was not running.
func TestCaptureKill9(t *testing.T) {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true, TBF: seedTBF, DeferMirror: true})
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false)
	p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String(), NATSHost: "0.0.0.0"})
	ts := ConnectTestSystem(t, p, replayListen)
	spoolDir := filepath.Join(p.Dir, "spool")
	pr := startCapture(t, p, ext, spoolDir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	prod, sc := OpenFeed(ctx, t, lab, ext)
	var sent []Msg
	push := func(size int64) {
		t.Helper()
		m, err := send(ctx, sc.C, websocket.MessageBinary, payload("binary", uint64(len(sent)), size), 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
		if _, err := prod.Wait(ctx, len(sent)); err != nil {
			t.Fatal(err)
		}
	}
	// 30 MB take 5 s to upload at the capped rate: the kill comes while
	// most of them are still spooled.
	push(30 << 20)
	// Every frame of it read and spooled (none left in the socket queue or
	// a batch in the making, which a kill would lose with the process).
	last := -1.0
	waitFor(t, 30*time.Second, "capture read everything", func() error {
		n, err := captureMetric(p, "tapline_capture_frames_total")
		if err != nil {
			return err
		}
		if n != last {
			last = n
			time.Sleep(300 * time.Millisecond)
			return fmt.Errorf("frames captured still growing (%v)", n)
		}
		return nil
	})
	held, err := captureMetric(p, "tapline_capture_spool_bytes")
	if err != nil {
		t.Fatal(err)
	}
	pr.Kill9()
	if held < 1e6 {
		t.Fatalf("the spool held only %.0f bytes at the kill: the test did not kill with frames spooled", held)
	}
	push(1 << 20) // while capture is down: never captured
	time.Sleep(2 * time.Second)
	pr.Start(t)
	waitCaptureHealthy(t, p)
	time.Sleep(time.Second)
	push(1 << 20)
	_ = sc.C.Close(websocket.StatusNormalClosure, "done")

	rep := p.Ledger(LedgerCheck{
		Prod:       []ledger.Production{production(sc.Remote, ext.Addr.String(), proto.ServerToClient, sent)},
		Deliveries: ts.Deliveries,
		Bounds: func(_, _ int64) *ledger.Bounds {
			// What was pushed while capture was down, and at most the
			// frames of the kill's last read batches.
			return &ledger.Bounds{Lo: 1 << 20, Hi: 2<<20 + 64*mss, Why: "the 1 MiB pushed while capture was down (plus at most a read batch at the kill, and the frame boundary resync)"}
		},
	})
	got := ts.Msgs()
	if len(got) == 0 || got[0] != sent[0] {
		t.Fatalf("the message spooled before the kill was not delivered exact: test system got %v, want first %v", got, sent[0])
	}
	if rep.Exact == len(sent) || rep.BytesMissing == 0 {
		t.Errorf("the message pushed while capture was down is not reported: %s", rep.Summary())
	}
	requireSubsequence(t, sent, got)

	// The restarted capture reported the span it was not running.
	mctx, mcancel := context.WithTimeout(ctx, 10*time.Second)
	defer mcancel()
	st, err := p.JS.Stream(mctx, proto.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(mctx, proto.EventsSubject("decap", "drops"))
	if err != nil {
		t.Fatalf("no drop report: %v", err)
	}
	var ev struct {
		Stage string `json:"stage"`
		Down  *struct {
			FromNs int64 `json:"from_ns"`
			ToNs   int64 `json:"to_ns"`
		} `json:"not_running"`
	}
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	found := ev.Down != nil
	if !found {
		// Later reports carry no span: look through them all.
		for seq := uint64(1); seq <= m.Sequence && !found; seq++ {
			if mm, err := st.GetMsg(mctx, seq); err == nil && mm.Subject == proto.EventsSubject("decap", "drops") {
				ev.Down = nil
				if json.Unmarshal(mm.Data, &ev) == nil && ev.Down != nil {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("no drop report names the span decap capture was not running")
	} else {
		t.Logf("reported not running for %v", time.Duration(ev.Down.ToNs-ev.Down.FromNs).Round(time.Millisecond))
	}
	t.Log(rep.Summary())
}
