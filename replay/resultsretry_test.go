package replay

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// TestResultResentWhenNotStored: a result whose publish the stream never
// got (as when the results stream's leader is killed with it in flight)
// is sent again and stored once. Before, the failure was only logged and
// TAPLINE_RESULTS lacked the result of a message the test system had
// received.
func TestResultResentWhenNotStored(t *testing.T) {
	_, url := natstest.Run(t)
	px := natstest.NewDropProxy(t, url, `"seq":5,`)
	nc, err := nats.Connect(px.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.ResultsStream); err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry(), func() float64 { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	// An unanswered publish times out quickly, as resultAckTimeout does
	// in Run.
	rjs, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	p := &resultsPub{js: rjs, level: ResultsAll, subj: proto.ResultsSubject, log: slog.Default(), m: m}
	const n = 10
	var rs []pendingResult
	for seq := uint64(1); seq <= n; seq++ {
		rs = append(rs, messageResult(Result{Kind: "message", Conn: "c1", VNI: 1, Dir: proto.ServerToClient, Seq: seq, Result: "sent"}, 100+seq))
	}
	if !p.store(ctx, rs) {
		t.Fatal("results not stored before the deadline")
	}
	st, err := js.Stream(ctx, proto.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var got uint64
	for time.Now().Before(deadline) {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got = info.State.Msgs; got >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if px.Dropped() != 1 {
		t.Fatalf("the proxy dropped %d publishes, want 1", px.Dropped())
	}
	// A moment more: a result stored twice would show now.
	time.Sleep(500 * time.Millisecond)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("%d results stored, want %d (one lost publish)", info.State.Msgs, n)
	}
}
