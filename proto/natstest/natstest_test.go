package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

func TestRestartKeepsStreams(t *testing.T) {
	srv, url := Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.FramesStream, proto.MsgsStream); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second call with the same options succeeds.
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.FramesStream); err != nil {
		t.Fatalf("second EnsureStreams: %v", err)
	}
	if _, err := js.Publish(ctx, proto.FramesSubject(7, 3), []byte("x")); err != nil {
		t.Fatal(err)
	}
	Restart(t, srv)
	// The first JetStream API request after a server restart can be lost
	// while the server recovers its streams: retry with short timeouts, as
	// the stages do.
	var info *jetstream.StreamInfo
	for ctx.Err() == nil {
		rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		s, err := js.Stream(rctx, proto.FramesStream)
		if err == nil {
			info, err = s.Info(rctx)
		}
		rcancel()
		if err == nil {
			break
		}
	}
	if info == nil {
		t.Fatal("stream not reachable after restart")
	}
	if info.State.Msgs != 1 {
		t.Fatalf("after restart stream holds %d messages, want 1", info.State.Msgs)
	}
}
