package e2e

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// Soak settings: TAPLINE_SOAK_DURATION (pushing time, default 2m; `make
// soak DURATION=30m`), TAPLINE_SOAK_SEED (replays a run: every size,
// interval and fault time follows from it), TAPLINE_SOAK_CONNS (default
// 20) and TAPLINE_SOAK_MB (payload budget, default 300 MB).
const (
	soakTimeout = 15 * time.Second // --idle-timeout, --conn-idle of the stages
	soakSilence = 22 * time.Second // shortest silence: longer than every timeout
)

// TestSoak looks like production over hours, compressed into minutes:
// tens of long-lived WebSocket connections (half with permessage-deflate
// and context takeover), pushes from 1 KB to 100 MB at irregular
// intervals with silences longer than every timeout the stages have,
// congestion windows on the mirror link (tbf) and kill -9 + restart of
// every stage and of the NATS server at random times, preferably inside a
// large message. The ledger must balance at the end.
func TestSoak(t *testing.T) {
	needLab(t)
	dur := 2 * time.Minute
	if v := os.Getenv("TAPLINE_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TAPLINE_SOAK_DURATION: %v", err)
		}
		dur = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("TAPLINE_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TAPLINE_SOAK_SEED: %v", err)
		}
		seed = s
	}
	nconns := envInt("TAPLINE_SOAK_CONNS", 20)
	budget := int64(envInt("TAPLINE_SOAK_MB", 300)) << 20
	if dur > 10*time.Minute && os.Getenv("TAPLINE_SOAK_MB") == "" {
		budget = int64(dur/time.Minute) * 100 << 20
	}
	t.Logf("soak: TAPLINE_SOAK_SEED=%d duration %v, %d connections, budget %d MB", seed, dur, nconns, budget>>20)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	var rngMu sync.Mutex
	rnd := func(f func(r *rand.Rand) int64) int64 { rngMu.Lock(); defer rngMu.Unlock(); return f(rng) }
	between := func(lo, hi time.Duration) time.Duration {
		return time.Duration(rnd(func(r *rand.Rand) int64 { return int64(lo) + r.Int64N(int64(hi-lo)) }))
	}

	lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true})
	deflate := &websocket.AcceptOptions{CompressionMode: websocket.CompressionContextTakeover}
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, deflate, false)
	to := soakTimeout.String()
	p := NewPipeline(t, lab, PipelineOptions{
		Listen: replayListen + "=" + ext.Addr.String(),
		Extra: map[string][]string{
			"reassemble": {"--idle-timeout", to, "--ack-wait", "5s"},
			"replay":     {"--conn-idle", to, "--ack-wait", "5s", "--close-wait", "2s"},
		},
	})
	ts := ConnectReconnecting(t, p, replayListen)

	ctx, cancel := context.WithTimeout(context.Background(), dur+20*time.Minute)
	defer cancel()
	type prodConn struct {
		sc   *ServerConn
		col  *Collector
		sent []Msg
	}
	pcs := make([]*prodConn, nconns)
	cols, scs := OpenFeeds(ctx, t, lab, ext, "/soak", nconns, func(i int) *websocket.DialOptions {
		if i%2 == 0 {
			return &websocket.DialOptions{CompressionMode: websocket.CompressionContextTakeover}
		}
		return &websocket.DialOptions{}
	})
	for i := range pcs {
		pcs[i] = &prodConn{sc: scs[i], col: cols[i]}
	}

	end := time.Now().Add(dur)
	var left atomic.Int64
	left.Store(budget)
	var bigInFlight atomic.Int32
	var wantBig atomic.Bool // a fault waits for a large message
	var totalBytes atomic.Int64
	// size draws a message size: mostly small, some up to 2 MB, a few up
	// to 100 MB while the budget allows.
	size := func() int64 {
		s := rnd(func(r *rand.Rand) int64 {
			x := r.Float64()
			lo, hi := 1<<10, 64<<10
			switch {
			case x > 0.97:
				lo, hi = 2<<20, 100<<20
			case x > 0.75:
				lo, hi = 64<<10, 2<<20
			}
			return int64(float64(lo) * math.Pow(float64(hi)/float64(lo), r.Float64()))
		})
		if wantBig.Load() && left.Load() > 96<<20 && wantBig.CompareAndSwap(true, false) {
			s = rnd(func(r *rand.Rand) int64 { return 4<<20 + r.Int64N(28<<20) })
		}
		if s > left.Load()/3 {
			s = 1<<10 + rnd(func(r *rand.Rand) int64 { return r.Int64N(15 << 10) })
		}
		left.Add(-s)
		return s
	}
	var wg sync.WaitGroup
	errs := make(chan error, nconns)
	for i, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; time.Now().Before(end); j++ {
				var pause time.Duration
				if rnd(func(r *rand.Rand) int64 { return r.Int64N(100) }) < 12 {
					pause = between(soakSilence, soakSilence+10*time.Second)
				} else {
					pause = between(100*time.Millisecond, 3*time.Second)
				}
				if time.Now().Add(pause).After(end) {
					break
				}
				time.Sleep(pause)
				n := size()
				if i == 0 && j == 3 && left.Load() > 100<<20 {
					n = 100 << 20 // at least one 100 MB message
					left.Add(-n)
				}
				kind, typ := "binary", websocket.MessageBinary
				if rnd(func(r *rand.Rand) int64 { return r.Int64N(2) }) == 0 {
					kind, typ = "text", websocket.MessageText
				}
				frame := int(1<<10 + rnd(func(r *rand.Rand) int64 { return r.Int64N(63 << 10) }))
				big := n >= 2<<20
				if big {
					bigInFlight.Add(1)
				}
				m, err := send(ctx, pc.sc.C, typ, payload(kind, uint64(i)<<32|uint64(j), n), frame)
				if big {
					bigInFlight.Add(-1)
				}
				if err != nil {
					errs <- fmt.Errorf("connection %d message %d: %w", i, j, err)
					return
				}
				totalBytes.Add(n)
				pc.sent = append(pc.sent, m)
			}
		}()
	}

	// Faults: every stage and the NATS server, in a seeded order, at
	// seeded times, inside a large message when one is being sent.
	var faultLog []string
	var tbfDrops uint64
	var faultsDone sync.WaitGroup
	faultsDone.Add(1)
	go func() {
		defer faultsDone.Done()
		targets := []string{"decap", "reassemble", "replay", "archive", "nats"}
		nextTBF := time.Now().Add(between(10*time.Second, 30*time.Second))
		for k := 0; ; k++ {
			time.Sleep(between(8*time.Second, 20*time.Second))
			if time.Now().Add(10 * time.Second).After(end) {
				return
			}
			if time.Now().After(nextTBF) {
				d := between(2*time.Second, 5*time.Second)
				if err := setTBF(lab, true); err != nil {
					errs <- err
					return
				}
				time.Sleep(d)
				c, err := lab.Counters()
				if err == nil {
					tbfDrops += c.TBFDrops
				}
				if err := setTBF(lab, false); err != nil {
					errs <- err
					return
				}
				faultLog = append(faultLog, fmt.Sprintf("%s tbf %v (%d drops)", time.Now().Format("15:04:05"), d.Round(time.Millisecond), c.TBFDrops))
				nextTBF = time.Now().Add(between(15*time.Second, 40*time.Second))
			}
			if k%len(targets) == 0 {
				rngMu.Lock()
				rng.Shuffle(len(targets), func(a, b int) { targets[a], targets[b] = targets[b], targets[a] })
				rngMu.Unlock()
			}
			name := targets[k%len(targets)]
			inside := bigInFlight.Load() > 0
			if !inside {
				wantBig.Store(true)
			}
			for w := 0; w < 100 && !inside; w++ {
				inside = bigInFlight.Load() > 0
				if !inside {
					time.Sleep(100 * time.Millisecond)
				}
			}
			wantBig.Store(false)
			if inside {
				// Into the message, not at its first byte.
				time.Sleep(between(50*time.Millisecond, 500*time.Millisecond))
			}
			p.Procs[name].Kill9()
			if name == "nats" {
				p.StartNATS()
			} else {
				p.StartStage(name)
			}
			faultLog = append(faultLog, fmt.Sprintf("%s kill -9 %s (inside a large message: %v)", time.Now().Format("15:04:05"), name, inside))
		}
	}()
	wg.Wait()
	faultsDone.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("production: %v", err)
	}
	for _, l := range faultLog {
		t.Log(l)
	}
	var prod []ledger.Production
	for i, pc := range pcs {
		got, err := pc.col.Wait(ctx, len(pc.sent))
		if err != nil {
			t.Fatalf("production client %d: %v", i, err)
		}
		requireSame(t, fmt.Sprintf("production client %d", i), pc.sent, got)
		_ = pc.sc.C.Close(websocket.StatusNormalClosure, "done")
		prod = append(prod, production(pc.sc.Remote, ext.Addr.String(), proto.ServerToClient, pc.sent))
	}
	rep := p.Ledger(LedgerCheck{Prod: prod, Deliveries: ts.Deliveries, Settle: 3 * soakTimeout})
	// The archive holds every stored frame exactly once, restarts of
	// the archive and of the NATS server notwithstanding.
	frames, archived := checkArchiveExact(t, p, 3*time.Minute)
	cnt, _ := lab.Counters()
	flagged := 0
	for _, n := range rep.Flagged {
		flagged += n
	}
	t.Logf("soak figures (TAPLINE_SOAK_SEED=%d): %d MB pushed in %d messages: exact %d / flagged %d %v / lost %d; bytes reported missing %d, bounds [%d, %d]; tbf dropped %d packets; mirrored %d packets; frames stream %d, archive %d packets",
		seed, totalBytes.Load()>>20, rep.Produced, rep.Exact, flagged, rep.Flagged, rep.Lost, rep.BytesMissing,
		rep.Bounds.Lo, rep.Bounds.Hi, tbfDrops, cnt.MirredPackets, frames, archived)
}

// setTBF puts a token bucket on the mirror link (a congestion window) or
// restores the lab's deep queue.
func setTBF(lab *mirrorlab.Lab, on bool) error {
	args := []string{"-n", lab.Prod, "qdisc", "replace", "dev", mirrorlab.MirrorDev, "root", "pfifo", "limit", "500000"}
	if on {
		args = []string{"-n", lab.Prod, "qdisc", "replace", "dev", mirrorlab.MirrorDev, "root", "tbf", "rate", "50mbit", "burst", "128kb", "limit", "256kb"}
	}
	out, err := execCombined("tc", args...)
	if err != nil {
		return fmt.Errorf("tc %v: %v: %s", args, err, out)
	}
	return nil
}

func execCombined(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
