package udpin

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// burstBytes is the TCP payload pushed through the lab: 100 MB, or
// TAPLINE_BURST_MB.
func burstBytes() int64 {
	if v, err := strconv.Atoi(os.Getenv("TAPLINE_BURST_MB")); err == nil && v > 0 {
		return int64(v) * 1e6
	}
	return 100e6
}

// burstFlows is the number of concurrent TCP connections the burst is
// spread over: 4, or TAPLINE_BURST_FLOWS.
func burstFlows() int {
	if v, err := strconv.Atoi(os.Getenv("TAPLINE_BURST_FLOWS")); err == nil && v > 0 {
		return v
	}
	return 4
}

// burstResult is what one reader made of a burst.
type burstResult struct {
	sent, received, dropped uint64        // mirror packets: sent by prod, read by the reader, dropped by the target kernel
	push                    time.Duration // the TCP transfers: the burst's length
}

func (r burstResult) String() string {
	return fmt.Sprintf("sent %d, received %d (%.2f%%), kernel drops %d, burst lasted %v",
		r.sent, r.received, 100*float64(r.received)/float64(max(r.sent, 1)), r.dropped, r.push.Round(time.Millisecond))
}

// burst pushes n bytes of TCP payload ext->prod at full speed while a
// reader opened in the target namespace receives the mirror, and waits
// until every mirror packet sent is either received or counted as dropped
// by the target's kernel.
func burst(tb testing.TB, l *mirrorlab.Lab, n int64, received func() uint64) burstResult {
	tb.Helper()
	before, err := l.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	received0 := received()
	t0 := time.Now()
	flows := burstFlows()
	errc := make(chan error, flows)
	for i := 0; i < flows; i++ {
		go func() { errc <- l.TCPTransfer(ctx, mirrorlab.ExtToProd, n/int64(flows)) }()
	}
	for i := 0; i < flows; i++ {
		if err := <-errc; err != nil {
			tb.Fatal(err)
		}
	}
	var r burstResult
	r.push = time.Since(t0)
	var c mirrorlab.Counters
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if c, err = l.Counters(); err != nil {
			tb.Fatal(err)
		}
		r.sent = c.Sent - before.Sent
		r.dropped = c.TargetUDP.RcvbufErrors - before.TargetUDP.RcvbufErrors
		r.received = received() - received0
		if r.received+r.dropped >= r.sent {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mirror packets unaccounted for: %v; counters %+v", r, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c.MirredPackets-before.MirredPackets != r.sent {
		tb.Fatalf("mirred copied %d frames but %d mirror packets were sent", c.MirredPackets-before.MirredPackets, r.sent)
	}
	return r
}

// openIntake opens the intake inside the lab's target namespace.
func openIntake(tb testing.TB, l *mirrorlab.Lab, cfg Config) *Intake {
	tb.Helper()
	var in *Intake
	err := mirrorlab.Do(l.Target, func() (err error) {
		in, err = Open(cfg, nil)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, func([]Datagram) {}) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	return in
}

// openNaive opens the naive reader inside the lab's target namespace.
func openNaive(tb testing.TB, l *mirrorlab.Lab) *Naive {
	tb.Helper()
	var nv *Naive
	err := mirrorlab.Do(l.Target, func() (err error) {
		nv, err = ListenNaive(l.TargetAddrPort().String())
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- nv.Run(ctx, nil) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	return nv
}

// TestLabBurstLossless: 100 MB of TCP payload at full speed through the
// kernel mirror lab, and the intake receives every mirror packet: no
// kernel drop, no RcvbufErrors. The buffer is larger than the default so
// that a test machine starving the reader for the whole burst still cannot
// make the kernel drop (BenchmarkLabBurst measures the defaults).
func TestLabBurstLossless(t *testing.T) {
	l := mirrorlab.New(t, mirrorlab.Options{})
	in := openIntake(t, l, Config{Addrs: []string{l.TargetAddrPort().String()}, RcvBuf: 256 << 20})
	n := burstBytes()
	if testing.Short() {
		n = 10e6
	}
	r := burst(t, l, n, func() uint64 { return in.Stats().Datagrams })
	t.Logf("udpin: %v", r)
	st := in.Stats()
	if r.dropped != 0 || st.KernelDrops != 0 || r.received != r.sent {
		t.Fatalf("intake lost mirror packets: %v; intake stats %+v", r, st)
	}
	if min := uint64(n / 1448); r.sent < min {
		t.Fatalf("only %d mirror packets for %d bytes", r.sent, n)
	}
}

// BenchmarkLabBurst compares the intake with the naive reader on the same
// bursts through the kernel lab (scripts/bench-intake.sh): each iteration
// pushes one burst of TAPLINE_BURST_MB (100) over TAPLINE_BURST_FLOWS (4)
// TCP connections at full speed. Metrics are totals over the iterations.
func BenchmarkLabBurst(b *testing.B) {
	n := burstBytes()
	for _, reader := range []string{"udpin", "naive"} {
		b.Run(reader, func(b *testing.B) {
			l := mirrorlab.New(b, mirrorlab.Options{})
			var received func() uint64
			switch reader {
			case "udpin":
				in := openIntake(b, l, Config{Addrs: []string{l.TargetAddrPort().String()}})
				received = func() uint64 { return in.Stats().Datagrams }
			case "naive":
				nv := openNaive(b, l)
				received = func() uint64 { d, _ := nv.Received(); return d }
			}
			var total burstResult
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := burst(b, l, n, received)
				total.sent += r.sent
				total.received += r.received
				total.dropped += r.dropped
				total.push += r.push
			}
			b.StopTimer()
			b.Logf("%s: %d burst(s) of %d MB over %d flows: %v", reader, b.N, n/1e6, burstFlows(), total)
			b.ReportMetric(float64(total.sent)/float64(b.N), "sent/burst")
			b.ReportMetric(float64(total.received)/float64(b.N), "received/burst")
			b.ReportMetric(100*float64(total.sent-min(total.received, total.sent))/float64(max(total.sent, 1)), "loss_%")
			b.ReportMetric(float64(n)*float64(b.N)/1e6/total.push.Seconds(), "burst_MB/s")
		})
	}
}
