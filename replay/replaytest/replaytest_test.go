package replaytest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto/natstest"
)

// TestPublisherBoundsItsWindow publishes far more entries than the
// JetStream client lets await acknowledgement, to a server that is slower
// to acknowledge than the client's stall wait: the publisher waits for the
// oldest acknowledgement instead of stalling the client, and every entry
// is acknowledged in order.
func TestPublisherBoundsItsWindow(t *testing.T) {
	_, url := natstest.Run(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// A slow store: each publish is acknowledged 250 ms after it arrived
	// (longer than the client's 200 ms stall wait), as a loaded JetStream
	// server may do.
	var seq atomic.Uint64
	for _, subj := range []string{"slow.>", "tapline.msgs.>"} {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			n := seq.Add(1)
			go func() {
				time.Sleep(250 * time.Millisecond)
				b, _ := json.Marshal(map[string]any{"stream": "SLOW", "seq": n})
				_ = m.Respond(b)
			}()
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Twice the default window: a call's leftovers and the next call's
	// window fit.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(128))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var msgs []*nats.Msg
	for i := range 400 {
		msgs = append(msgs, &nats.Msg{Subject: fmt.Sprintf("slow.%d", i), Data: []byte{byte(i)}})
	}
	p := Publisher{JS: js}
	if err := p.Publish(ctx, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := seq.Load(); got != uint64(len(msgs)) {
		t.Fatalf("%d publishes reached the server, want %d", got, len(msgs))
	}
	m := &Message{Conn: "c", Dir: "c2s", Seq: 1, Opcode: "binary", Size: 400 << 10, Fill: Gen(1), ChunkSize: 1 << 10}
	if err := p.PublishMessage(ctx, m); err != nil {
		t.Fatalf("PublishMessage: %v", err)
	}
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
