package replay

import (
	"context"
	"testing"
	"time"

	"github.com/tapline/tapline/proto/natstest"
)

// TestLedgerReplicatedOnCluster: on a 3-node cluster with
// --stream-replicas 3, replay's ledger bucket (open events and delivery
// marks) has 3 replicas too. It had 1: with the node holding it killed,
// every delivery-mark write failed ("no response from stream") and replay
// delivered nothing more until the node came back (the cluster test that
// kills the messages stream's leader under traffic: 5 of 21 messages).
func TestLedgerReplicatedOnCluster(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	if err := c.WaitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	e := newEnvURL(t, c.URLs())
	e.startReplay(nil, "--stream-replicas", "3", "--target", "ws://127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := "KV_" + openBucket("tapline-replay")
	for {
		st, err := e.js.Stream(ctx, name)
		if err == nil {
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.Config.Replicas != 3 {
				t.Fatalf("ledger bucket %s has %d replicas, want 3 (--stream-replicas)", name, info.Config.Replicas)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("ledger bucket %s never created: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
