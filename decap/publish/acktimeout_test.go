package publish

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
)

// TestOrderAckTimeout: a publish whose ack times out while later
// publishes of its shard are acknowledged (the server never got it, as a
// JetStream leader loses a publish in an election) is resent after those,
// but at most MaxInflightShardBytes of its shard land ahead of it, so it
// stays within reassemble's reorder window. Before, every publish in
// flight (up to MaxInflight, 256 batches by default: 16 MiB) could land
// ahead of it: with a stream leader killed under load reassemble reported
// the late batches' bytes as mirror loss (reorder window exceeded) although
// the stream held them.
func TestOrderAckTimeout(t *testing.T) {
	_, url := natstest.Run(t)
	px := natstest.NewDropProxy(t, url, "-5\r\n")
	nc, err := nats.Connect(px.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
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
	size := int64(len(shardBatch(0).W.Bytes()))
	limit := 4 * size
	p, err := New(nc, Config{MaxInflight: 64, AckTimeout: 500 * time.Millisecond, RetryWait: 50 * time.Millisecond, MaxInflightShardBytes: limit},
		nil, slog.Default(), func(*batch.Batch) {})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	const n = 300
	for i := range n {
		p.Submit(shardBatch(i), true)
		time.Sleep(time.Millisecond)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer dcancel()
	if err := p.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	if dropped := px.Dropped(); dropped != 1 {
		t.Fatalf("the proxy dropped %d publishes, want 1", dropped)
	}
	order := storedOrder(t, js, n)
	// Bytes of later batches stored ahead of each batch.
	var ahead int64
	for i, b := range order {
		var bytes int64
		for _, a := range order[:i] {
			if a > b {
				bytes += size
			}
		}
		ahead = max(ahead, bytes)
	}
	t.Logf("at most %d B (%d batches) of later batches stored ahead of one, limit %d B", ahead, ahead/size, limit)
	if ahead == 0 {
		t.Error("no batch stored out of order: the dropped publish no longer exercises the retry")
	}
	if ahead > limit {
		t.Errorf("%d B of later batches stored ahead of a retried one, more than MaxInflightShardBytes %d", ahead, limit)
	}
}

// shardBatch is batch i of one shard.
func shardBatch(i int) *batch.Batch {
	w := &framebatch.Writer{App: "test"}
	w.Add(&framebatch.Frame{TimeNs: int64(i), Data: make([]byte, 1000)})
	return &batch.Batch{Subject: proto.FramesSubject(1, 0), VNI: 1, Shard: 0, W: w}
}

// storedOrder reads the frames stream in order and returns the frame
// times (the submit order) of its n batches, each stored once.
func storedOrder(t *testing.T, js jetstream.JetStream, n int) []int64 {
	t.Helper()
	var out []int64
	seen := map[int64]bool{}
	for _, m := range natstest.StoredMsgs(t, js, proto.FramesStream) {
		var f framebatch.Frame
		if err := framebatch.NewReader(m.Data()).Next(&f); err != nil {
			t.Fatal(err)
		}
		if seen[f.TimeNs] {
			t.Errorf("batch %d stored twice", f.TimeNs)
		}
		seen[f.TimeNs] = true
		out = append(out, f.TimeNs)
	}
	if len(seen) != n {
		t.Errorf("%d batches stored, want %d", len(seen), n)
	}
	return out
}
