package publish

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
)

func mkBatch(i int) *batch.Batch {
	w := &framebatch.Writer{App: "test"}
	w.Add(&framebatch.Frame{TimeNs: int64(i), Data: make([]byte, 1000)})
	return &batch.Batch{Subject: proto.FramesSubject(1, i%4), VNI: 1, Shard: i % 4, W: w}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, proto.FramesStream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// TestOutageBufferDropsAndRecovers: while JetStream is down the publisher
// buffers up to its limit, drops (and counts) past it, is unhealthy, and
// publishes the buffer once the server is back: every batch is either
// stored once or counted as dropped.
func TestOutageBufferDropsAndRecovers(t *testing.T) {
	srv, url := natstest.Run(t)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.FramesStream); err != nil {
		t.Fatal(err)
	}
	var released atomic.Int64
	reg := prometheus.NewRegistry()
	p, err := New(nc, Config{MaxInflight: 8, BufferBytes: 20 * 1200, AckTimeout: 500 * time.Millisecond, RetryWait: 50 * time.Millisecond}, reg, slog.Default(), func(*batch.Batch) { released.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	for i := 0; i < 10; i++ {
		if !p.Submit(mkBatch(i), false) {
			t.Fatal("dropped while healthy")
		}
	}
	waitFor(t, "10 batches stored", func() bool { return streamMsgs(t, js) == 10 })
	if err := p.Healthy(); err != nil {
		t.Fatal(err)
	}

	port := srv.Addr().(*net.TCPAddr).Port
	dir := filepath.Dir(srv.JetStreamConfig().StoreDir)
	srv.Shutdown()
	srv.WaitForShutdown()
	waitFor(t, "disconnect", func() bool { return !nc.IsConnected() })
	if p.Healthy() == nil {
		t.Fatal("healthy while NATS is down")
	}
	accepted := 0
	for i := 10; i < 100; i++ {
		if p.Submit(mkBatch(i), false) {
			accepted++
		}
	}
	drops := p.Drops()[ReasonBufferFull]
	if accepted == 0 || drops.Batches == 0 || int(drops.Batches)+accepted != 90 || drops.Frames != drops.Batches {
		t.Fatalf("accepted %d, drops %+v", accepted, drops)
	}

	var next *server.Server
	waitFor(t, "server restart", func() bool {
		next, err = natstest.Start(natstest.Options{Port: port, StoreDir: dir})
		return err == nil
	})
	t.Cleanup(func() { next.Shutdown(); next.WaitForShutdown() })
	waitFor(t, "buffer published after restart", func() bool { return p.Pending() == 0 })
	waitFor(t, "stream count", func() bool { return streamMsgs(t, js) == uint64(10+accepted) })
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if released.Load() != 100 {
		t.Fatalf("released %d batches, want 100", released.Load())
	}
	if err := p.Healthy(); err != nil {
		t.Fatal(err)
	}
	// Duplicates from retried publishes were removed by Nats-Msg-Id.
	if n := streamMsgs(t, js); n != uint64(10+accepted) {
		t.Fatalf("stream holds %d, want %d", n, 10+accepted)
	}
}

// TestBlockingSubmit: with block set, Submit waits for room instead of
// dropping (used when reading a file).
func TestBlockingSubmit(t *testing.T) {
	_, url := natstest.Run(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := proto.EnsureStreams(context.Background(), js, proto.StreamOptions{}, proto.FramesStream); err != nil {
		t.Fatal(err)
	}
	p, err := New(nc, Config{MaxInflight: 2, BufferBytes: 3000}, nil, slog.Default(), func(*batch.Batch) {})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	for i := 0; i < 200; i++ {
		if !p.Submit(mkBatch(i), true) {
			t.Fatal("blocking submit dropped")
		}
	}
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(p.Drops()) != 0 || streamMsgs(t, js) != 200 {
		t.Fatalf("drops %v stored %d", p.Drops(), streamMsgs(t, js))
	}
}

// TestNoStreamStopBlocking: without a stream every publish fails and is
// retried; a blocked Submit gives up once StopBlocking is called, and Drain
// with a deadline counts what is left as shutdown drops.
func TestNoStreamStopBlocking(t *testing.T) {
	_, url := natstest.Run(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var released atomic.Int64
	p, err := New(nc, Config{MaxInflight: 2, BufferBytes: 3000, AckTimeout: 200 * time.Millisecond, RetryWait: 10 * time.Millisecond}, nil, slog.Default(), func(*batch.Batch) { released.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	done := make(chan int)
	go func() {
		n := 0
		for i := 0; i < 50; i++ {
			if p.Submit(mkBatch(i), true) {
				n++
			}
		}
		done <- n
	}()
	waitFor(t, "a publish failure", func() bool { return p.Healthy() != nil || p.Pending() > 0 })
	p.StopBlocking()
	var accepted int
	select {
	case accepted = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Submit still blocked after StopBlocking")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := p.Drain(ctx); err == nil {
		t.Fatal("Drain reported success without a stream")
	}
	d := p.Drops()
	if int(d[ReasonBufferFull].Batches)+accepted != 50 || d[ReasonShutdown].Batches == 0 {
		t.Fatalf("accepted %d drops %+v", accepted, d)
	}
	waitFor(t, "every batch released", func() bool { return released.Load() == 50 })
}
