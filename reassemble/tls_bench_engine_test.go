package reassemble

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble/tlsdec"
)

// BenchmarkTLSvsPlaintextEngine measures the whole stage as it runs: the
// engine (one shard) with an embedded NATS server, consuming frame
// batches from TAPLINE_FRAMES and publishing messages to TAPLINE_MSGS.
// Each round is the same wss:// push (8 x 1 MiB, TLS 1.3 AES-128-GCM)
// once as captured and once as its decrypted plaintext, each a
// connection of its own (times shifted), stored before the engine starts
// and processed in order by one worker; a connection's time is from the
// previous close event to its own, in wall time and in the process's CPU
// time. The order alternates per round.
func BenchmarkTLSvsPlaintextEngine(b *testing.B) {
	sizes := make([]int, 8)
	for i := range sizes {
		sizes[i] = 1 << 20
	}
	cp := captureWSS(b, sizes, websocket.CompressionDisabled)
	var plain [2][]byte
	ks := tlsdec.NewKeyStore(10, 0)
	ks.AddLines(cp.keylog, time.Now())
	pc := tlsdec.NewConn(ks, tlsdec.Limits{}, sinkFunc(func(d int, p []byte) { plain[d] = append(plain[d], p...) }))
	pc.Data(0, cp.c2s, time.Now())
	pc.Data(1, cp.s2c, time.Now())
	pc.Close(time.Now())
	var payload int64
	for _, m := range cp.msgs {
		payload += int64(len(m))
	}
	variants := [2][]framebatch.Frame{
		tlsFrames(b, cp.writes, [2][]byte{cp.c2s, cp.s2c}, nil),
		tlsFrames(b, []tlsWrite{{0, len(plain[0])}, {1, len(plain[1])}}, plain, nil),
	}
	_, url := natstest.Run(b)
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := proto.EnsureStreams(ctx, js, testStreams, proto.FramesStream, proto.MsgsStream, proto.KeysStream); err != nil {
		b.Fatal(err)
	}
	if _, err := js.Publish(ctx, proto.KeysSubject("prod"), cp.keylog); err != nil {
		b.Fatal(err)
	}
	// Segment 0 warms up (TLS); then per round both variants.
	order := []int{0}
	for r := 0; r < b.N; r++ {
		order = append(order, r%2, 1-r%2)
	}
	bt := newBatcher(b, js, 64)
	for k, v := range order {
		shift := int64(k+1) * int64(time.Hour)
		for _, f := range variants[v] {
			f.TimeNs += shift
			bt.add(&f, 0)
		}
	}
	bt.flush()

	var mu sync.Mutex
	var closes []time.Time
	var cpus []time.Duration // the process's CPU time at each close
	cons, err := js.OrderedConsumer(ctx, proto.MsgsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if proto.Kind(m.Headers().Get(proto.HdrKind)) == proto.KindClose {
			c := cpuTime()
			mu.Lock()
			closes = append(closes, time.Now())
			cpus = append(cpus, c)
			mu.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	cfg := testConfig(url, 1, "bench-tls")
	cfg.NewDecoder = nil
	cfg.IdleTimeout = time.Hour
	cfg.TLS, cfg.TLSHoldBytes, cfg.TLSHoldTime, cfg.TLSMaxKeys, cfg.TLSKeyMaxAge = true, 64<<20, 30*time.Second, 1000, time.Hour
	d, _ := stage.TestDeps("reassemble")
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	b.ResetTimer()
	go func() { done <- Run(rctx, cfg, d) }()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		mu.Lock()
		n := len(closes)
		mu.Unlock()
		if n >= len(order) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d connections closed", n, len(order))
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	stop()
	<-done
	var t, cpu [2]time.Duration
	for k := 1; k < len(order); k++ {
		t[order[k]] += closes[k].Sub(closes[k-1])
		cpu[order[k]] += cpus[k] - cpus[k-1]
	}
	mb := float64(payload) * float64(b.N) / 1e6
	b.ReportMetric(mb/t[0].Seconds(), "tls-MB/s")
	b.ReportMetric(mb/t[1].Seconds(), "plain-MB/s")
	b.ReportMetric(t[1].Seconds()/t[0].Seconds(), "tls/plain")
	// CPU time of the process (engine, NATS server, collector) per
	// variant: less sensitive than wall time to the other jobs on a
	// shared machine.
	b.ReportMetric(cpu[1].Seconds()/cpu[0].Seconds(), "cpu-tls/plain")
}

// cpuTime is the CPU time (user + system) of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
