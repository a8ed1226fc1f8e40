package publish

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// TestOrderAcrossRestart: batches submitted while the NATS server
// restarts are stored in the order they were submitted. Retrying each
// failed batch on its own — and putting each back at the front, so a run
// of failures came back reversed, while newer batches were sent in the
// meantime — stored a shard's frames out of order after a NATS restart;
// reassemble then reported the bytes of the late batches as mirror loss
// (reorder window exceeded) although the frames stream held them.
func TestOrderAcrossRestart(t *testing.T) {
	srv, url := natstest.Run(t)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.FramesStream); err != nil {
		t.Fatal(err)
	}
	p, err := New(nc, Config{MaxInflight: 32, AckTimeout: 500 * time.Millisecond, RetryWait: 50 * time.Millisecond}, nil, slog.Default(), func(*batch.Batch) {})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	const n = 1500
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			p.Submit(mkBatch(i), true)
			time.Sleep(time.Millisecond)
		}
	}()
	port := srv.Addr().(*net.TCPAddr).Port
	dir := filepath.Dir(srv.JetStreamConfig().StoreDir)
	for round := range 3 {
		waitFor(t, "batches stored", func() bool { return streamMsgs(t, js) >= uint64(200*(round+1)) })
		srv.Shutdown()
		srv.WaitForShutdown()
		time.Sleep(300 * time.Millisecond)
		waitFor(t, "server restart", func() bool {
			var err error
			srv, err = natstest.Start(natstest.Options{Port: port, StoreDir: dir})
			return err == nil
		})
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	<-done
	dctx, dcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer dcancel()
	if err := p.Drain(dctx); err != nil {
		t.Fatal(err)
	}

	// The frame times of the stream, in order, are the submit order.
	last, inversions := int64(-1), 0
	for _, b := range storedOrder(t, js, n) {
		if b < last {
			if inversions++; inversions <= 5 {
				t.Errorf("batch %d stored after batch %d", b, last)
			}
		}
		last = max(last, b)
	}
	if inversions > 0 {
		t.Errorf("%d batches stored out of submit order", inversions)
	}
	_ = server.Options{}
}
