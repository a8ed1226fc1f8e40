package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// ReadStream reads what the stream holds and leaves no consumer behind
// (an ordered consumer that is only stopped stays on the server for
// minutes).
func TestReadStreamLeavesNoConsumer(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{Replicas: 1}, proto.MsgsStream); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"a", "b"} {
		m, err := proto.EventMsg(proto.MsgsSubject(1, 0), proto.KindOpen, c, 1, "", proto.OpenEvent{Conn: c, Client: "1.1.1.1:1", Server: "2.2.2.2:2"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	s, err := ReadStream(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Opens()) != 2 {
		t.Fatalf("%d opens, want 2", len(s.Opens()))
	}
	st, err := js.Stream(ctx, proto.MsgsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("%d consumers left on %s", info.State.Consumers, proto.MsgsStream)
	}
}
