package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// seedTBF congests the production host's link towards the target: 100
// Mbit/s with a 128 KB bucket and a 128 KB queue. A push at veth speed
// overflows it; the capture's upload, capped below it, passes.
var seedTBF = &mirrorlab.TBF{Rate: "100mbit", Burst: "128kb", Limit: "128kb"}

// seedSizes are the seed scenario's messages: 1, 10 and 100 MB.
var seedSizes = []int64{1 << 20, 10 << 20, 100 << 20}

// captureUploadRate caps decap capture's upload (bytes/s): 48 Mbit/s, half
// the congested link.
const captureUploadRate = 6_000_000

const captureHTTP = "127.0.0.1:9106"

// seedResult is what one mode of the seed scenario measured.
type seedResult struct {
	rep      *ledger.Report
	sent     []Msg
	tsGot    []Msg
	pushTime time.Duration
}

// pushSeed pushes the seed messages from the external system to the
// production client over one WebSocket, as fast as it can, and waits
// until production has them all.
func pushSeed(ctx context.Context, t *testing.T, lab *mirrorlab.Lab, ext *Server) ([]Msg, *ServerConn, time.Duration) {
	t.Helper()
	prod, sc := OpenFeed(ctx, t, lab, ext)
	start := time.Now()
	var sent []Msg
	for i, size := range seedSizes {
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
	push := time.Since(start)
	requireSame(t, "production client", sent, got)
	return sent, sc, push
}

// startCapture runs `decap capture` on the production namespace's
// interface, uploading to the pipeline's NATS over the (congested) link to
// the target, and waits until it is healthy.
func startCapture(t *testing.T, p *Pipeline, ext *Server, spoolDir string, extra ...string) *Proc {
	t.Helper()
	args := []string{"capture", "--iface", mirrorlab.ProdDev,
		"--filter", "tcp port " + strconv.Itoa(int(ext.Addr.Port())),
		"--vni", strconv.Itoa(int(p.Lab.VNI)),
		"--nats-url", "nats://" + mirrorlab.TargetAddr.String() + ":4222",
		"--shards", strconv.Itoa(p.opts.Shards), "--http", captureHTTP, "--log-level", "info",
		"--frames-max-bytes", "2147483648", "--msgs-max-bytes", "2147483648", "--results-max-bytes", "268435456",
		"--spool-dir", spoolDir, "--upload-rate", strconv.Itoa(captureUploadRate), "--events-interval", "1s"}
	return startProdDecap(t, p, "capture", captureHTTP, append(args, extra...))
}

func waitCaptureHealthy(t *testing.T, p *Pipeline) {
	t.Helper()
	waitProdHealthy(t, p, "capture", captureHTTP)
}

// captureMetric reads one metric (summed over its label sets) from decap
// capture's /metrics in the production namespace.
func captureMetric(p *Pipeline, name string) (float64, error) {
	resp, err := nsHTTPClient(p.Lab.Prod).Get("http://" + captureHTTP + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return 0, fmt.Errorf("metric %s not found on decap capture", name)
	}
	return sum, nil
}

// cpuSeconds is the user+system CPU time of a process so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ
}

// noLoss bounds the loss report of capture mode: nothing may be missing.
func noLoss(_, _ int64) *ledger.Bounds {
	return &ledger.Bounds{Lo: 0, Hi: 0, Why: "capture mode: every frame is spooled and uploaded, nothing may be missing"}
}

// TestSeedMirrorVersusCapture is the seed scenario side by side: the
// external system pushes 1, 10 and 100 MB over one WebSocket to the
// production client, with a token bucket on the production host's link
// towards the target. Mirror mode delivers what the mirror kept and flags
// the rest; capture mode (decap capture on the production interface,
// uploading over the same congested link) delivers all three messages
// byte-identical to the test system. The test fails if capture mode loses
// or flags a message.
func TestSeedMirrorVersusCapture(t *testing.T) {
	needLab(t)
	var mirror, capture seedResult

	t.Run("mirror", func(t *testing.T) {
		lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true, TBF: seedTBF})
		ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false)
		p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String()})
		ts := ConnectTestSystem(t, p, replayListen)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		sent, sc, push := pushSeed(ctx, t, lab, ext)
		_ = sc.C.Close(websocket.StatusNormalClosure, "done")
		rep := p.Ledger(LedgerCheck{
			Prod:       []ledger.Production{production(sc.Remote, ext.Addr.String(), proto.ServerToClient, sent)},
			Deliveries: ts.Deliveries,
			Bounds: func(lost, tbf int64) *ledger.Bounds {
				return &ledger.Bounds{Lo: 0, Hi: lost * mss, Why: fmt.Sprintf("%d packets lost on the mirror path (%d by tbf) × %d", lost, tbf, mss)}
			},
		})
		cnt, err := lab.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if cnt.TBFDrops == 0 {
			t.Fatal("the token bucket dropped nothing: the scenario did not congest the link")
		}
		if rep.Exact == len(sent) {
			t.Errorf("mirror mode delivered every message exact despite %d tbf drops: %s", cnt.TBFDrops, rep.Summary())
		}
		requireSubsequence(t, sent, ts.Msgs())
		mirror = seedResult{rep: rep, sent: sent, tsGot: ts.Msgs(), pushTime: push}
		t.Logf("mirror mode: %s; tbf dropped %d mirror packets; push took %v", rep.Summary(), cnt.TBFDrops, push.Round(time.Millisecond))
	})

	t.Run("capture", func(t *testing.T) {
		lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true, TBF: seedTBF, DeferMirror: true})
		ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false)
		p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String(), NATSHost: "0.0.0.0"})
		ts := ConnectTestSystem(t, p, replayListen)
		pr := startCapture(t, p, ext, filepath.Join(p.Dir, "spool"))
		cpu0, _ := cpuSeconds(pr.Pid())
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		sent, sc, push := pushSeed(ctx, t, lab, ext)
		_ = sc.C.Close(websocket.StatusNormalClosure, "done")
		// A lost message never arrives: wait for the ledger's quiescence
		// rather than for the messages.
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		tsGot, err := ts.Wait(wctx, len(sent))
		wcancel()
		if err != nil {
			t.Errorf("test system: %v", err)
		}
		lag := time.Since(start) - push
		rep := p.Ledger(LedgerCheck{
			Prod:       []ledger.Production{production(sc.Remote, ext.Addr.String(), proto.ServerToClient, sent)},
			Deliveries: ts.Deliveries,
			Bounds:     noLoss,
		})
		if rep.Exact != len(sent) || rep.BytesMissing != 0 {
			t.Errorf("capture mode lost or flagged a message: %s", rep.Summary())
		}
		tsGot = ts.Msgs()
		requireSame(t, "test system", sent, tsGot)
		cpu1, _ := cpuSeconds(pr.Pid())
		elapsed := time.Since(start)
		peak, err := captureMetric(p, "tapline_capture_spool_peak_bytes")
		if err != nil {
			t.Fatal(err)
		}
		delay, _ := captureMetric(p, "tapline_capture_upload_delay_max_seconds")
		kdrops, _ := captureMetric(p, "tapline_capture_kernel_drops_total")
		spoolDrops, _ := captureMetric(p, "tapline_capture_dropped_frames_total")
		if kdrops != 0 || spoolDrops != 0 {
			t.Errorf("decap capture dropped frames: kernel %v, spool %v", kdrops, spoolDrops)
		}
		cnt, err := lab.Counters()
		if err != nil {
			t.Fatal(err)
		}
		capture = seedResult{rep: rep, sent: sent, tsGot: tsGot, pushTime: push}
		t.Logf("capture mode: %s; spool peak %.1f MB, added delay max %.1f s (last message at the test system %v after production had it); tbf dropped %d packets of the upload (TCP resent them); push took %v; capture CPU %.2f s over %v (%.0f%% of one core)",
			rep.Summary(), peak/1e6, delay, lag.Round(100*time.Millisecond), cnt.TBFDrops, push.Round(time.Millisecond), cpu1-cpu0, elapsed.Round(time.Second), 100*(cpu1-cpu0)/elapsed.Seconds())
	})

	if mirror.rep != nil && capture.rep != nil {
		flagged := 0
		for _, n := range mirror.rep.Flagged {
			flagged += n
		}
		t.Logf("side by side: mirror %d/%d exact (%d flagged, %d lost, %d bytes missing), push %v; capture %d/%d exact, push %v (push time ratio capture/mirror %.2f)",
			mirror.rep.Exact, len(mirror.sent), flagged, mirror.rep.Lost, mirror.rep.BytesMissing, mirror.pushTime.Round(time.Millisecond),
			capture.rep.Exact, len(capture.sent), capture.pushTime.Round(time.Millisecond), float64(capture.pushTime)/float64(mirror.pushTime))
	}
}
