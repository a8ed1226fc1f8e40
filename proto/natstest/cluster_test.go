package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterR3: three nodes with routes form one JetStream cluster: an R3
// stream is placed on all three and survives one node going down.
func TestClusterR3(t *testing.T) {
	c := RunCluster(t, 3)
	_, js := Connect(t, c.URLs())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	var s jetstream.Stream
	var err error
	for ctx.Err() == nil {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		s, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
		ccancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("R3 stream created in %s, leader %s, %d replicas", time.Since(start).Round(time.Millisecond), info.Cluster.Leader, len(info.Cluster.Replicas))
	if len(info.Cluster.Replicas) != 2 {
		t.Fatalf("replicas %+v, want 2 besides the leader", info.Cluster.Replicas)
	}
	l := c.StreamLeader("R3")
	if l < 0 {
		t.Fatal("no node leads the stream")
	}
	c.Kill(l)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(pctx, "r3.x", []byte("after the leader died"))
		pcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no publish after the leader died: %v", err)
		}
	}
	if err := c.Restart(l); err != nil {
		t.Fatal(err)
	}
}
