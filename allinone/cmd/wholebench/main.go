// Command wholebench measures Tapline as users run it: nats-server,
// `decap --read FILE` and `reassemble` as separate processes on generated
// captures, timed until every message is stored in TAPLINE_MSGS, beside
// tshark (WebSocket dissection), tcpflow, the JetStream ceiling (the same
// bytes published and consumed through the same server and storage with
// no processing) and reassemble's engine in-process, in interleaved
// rounds; and the peak RSS of every process relaying one 100 MB message.
// scripts/bench-binaries.sh builds the binaries and runs it; the figures
// are in docs/BENCHMARKS.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

var (
	binDir    = flag.String("bin", "bin", "directory holding nats-server, decap, reassemble and archive")
	workDir   = flag.String("work", "", "scratch directory (default: a temporary one)")
	sizeMB    = flag.Int("mb", 128, "capture size in MB")
	conns     = flag.Int("conns", 8, "WebSocket connections in the capture")
	deflated  = flag.Int("deflated", 3, "connections of them with permessage-deflate")
	rounds    = flag.Int("rounds", 3, "interleaved rounds")
	bigMB     = flag.Int("big-mb", 100, "size of the one message of the memory case (0: skip it)")
	reArgs    = flag.String("reassemble-args", "", "extra reassemble flags (space-separated)")
	decapArgs = flag.String("decap-args", "", "extra decap flags (space-separated)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wholebench:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	dir := *workDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "wholebench"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	for _, c := range []struct {
		name     string
		deflated int
	}{{"mixed", *deflated}, {"plain", 0}} {
		if err := compare(ctx, dir, c.name, c.deflated); err != nil {
			return err
		}
	}
	if *bigMB > 0 {
		if err := memoryCase(ctx, dir); err != nil {
			return err
		}
	}
	return nil
}

// compare runs the interleaved rounds on one generated capture.
func compare(ctx context.Context, dir, name string, deflated int) error {
	capture := filepath.Join(dir, name+".pcap")
	defer os.Remove(capture)
	g, err := generate(capture, genSpec{conns: *conns, deflated: deflated, totalBytes: int64(*sizeMB) * 1e6, msgMin: 2 << 10, msgMax: 64 << 10, mss: 1448})
	if err != nil {
		return err
	}
	mb := float64(g.fileBytes) / 1e6
	fmt.Printf("== capture %s: %.1f MB, %d connections (%d permessage-deflate), %d messages, %.1f MB of payload, MSS 1448\n", name, mb, *conns, deflated, g.messages, float64(g.payload)/1e6)
	var want uint64
	if _, err := runTapline(ctx, filepath.Join(dir, "warm"), capture, g, &want, false, false); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	fmt.Printf("warm-up: %d entries in TAPLINE_MSGS (every round must store them all, every message complete)\n", want)
	var rTshark, rTcpflow, rCeil, rPerCore []float64
	for i := 1; i <= *rounds; i++ {
		rd := filepath.Join(dir, fmt.Sprint("round", i))
		live, err := runTapline(ctx, rd, capture, g, &want, false, false)
		if err != nil {
			return err
		}
		ts, err := runTool(rd, "tshark", "-n", "-r", capture, "-Y", "websocket", "-T", "fields", "-e", "frame.number")
		if err != nil {
			return fmt.Errorf("tshark: %w", err)
		}
		tf, err := runTool(rd, "tcpflow", "-r", capture, "-o", ".")
		if err != nil {
			return fmt.Errorf("tcpflow: %w", err)
		}
		ceil, err := runCeiling(ctx, rd, capture)
		if err != nil {
			return err
		}
		eng, err := runEngine(capture, g)
		if err != nil {
			return err
		}
		back, err := runTapline(ctx, rd, capture, g, &want, true, false)
		if err != nil {
			return err
		}
		tapRate := mb / live.wall.Seconds()
		perCore := mb / back.usage["reassemble"].cpu / (mb / eng)
		rTshark = append(rTshark, ts.Seconds()/live.wall.Seconds())
		rTcpflow = append(rTcpflow, tf.Seconds()/live.wall.Seconds())
		rCeil = append(rCeil, ceil.Seconds()/live.wall.Seconds())
		rPerCore = append(rPerCore, perCore)
		fmt.Printf("round %d: tapline %.0f MB/s (%v; CPU s: nats-server %.2f, decap %.2f, reassemble %.2f) | tshark %.1f MB/s | tcpflow %.0f MB/s | ceiling %.0f MB/s\n",
			i, tapRate, live.wall.Round(time.Millisecond), live.usage["nats-server"].cpu, live.usage["decap"].cpu, live.usage["reassemble"].cpu,
			mb/ts.Seconds(), mb/tf.Seconds(), mb/ceil.Seconds())
		fmt.Printf("round %d: reassemble on the stored backlog %.0f MB/s wall, %.0f MB per CPU-second; engine in-process %.0f MB per CPU-second: daemon/engine per core %.2f\n",
			i, mb/back.wall.Seconds(), mb/back.usage["reassemble"].cpu, mb/eng, perCore)
		fmt.Printf("round %d: peak RSS MiB: nats-server %d, decap %d, reassemble %d\n", i, live.usage["nats-server"].peak>>20, live.usage["decap"].peak>>20, live.usage["reassemble"].peak>>20)
	}
	fmt.Printf("%s: ratios over %d rounds (min-max): tapline/tshark %s, tapline/tcpflow %s, tapline/ceiling %s, reassemble daemon/engine per core %s\n",
		name, *rounds, spread(rTshark), spread(rTcpflow), spread(rCeil), spread(rPerCore))
	return nil
}

// memoryCase relays one big message through decap --read, reassemble and
// archive and prints each process's peak RSS.
func memoryCase(ctx context.Context, dir string) error {
	capture := filepath.Join(dir, "big.pcap")
	n := *bigMB << 20
	g, err := generate(capture, genSpec{conns: 1, totalBytes: int64(n), singleMessageLen: n, mss: 1448})
	if err != nil {
		return err
	}
	var want uint64
	r, err := runTapline(ctx, filepath.Join(dir, "big"), capture, g, &want, false, true)
	if err != nil {
		return fmt.Errorf("memory case: %w", err)
	}
	fmt.Printf("peak RSS relaying one %d MiB message (%.0f MB capture, %v): decap --read %d MiB, reassemble %d MiB, archive %d MiB, nats-server %d MiB\n",
		*bigMB, float64(g.fileBytes)/1e6, r.wall.Round(time.Millisecond), r.usage["decap"].peak>>20, r.usage["reassemble"].peak>>20, r.usage["archive"].peak>>20, r.usage["nats-server"].peak>>20)
	return nil
}

func spread(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f-%.2f", slices.Min(v), slices.Max(v))
}
