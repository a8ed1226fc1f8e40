package allinone

import (
	"context"
	"flag"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// TestStageHealthyOnlyWhenReady: each stage, started against a JetStream
// whose API answers slowly (as an R3 cluster creating streams does), is
// not healthy before what it needs exists: its streams, and replay's
// consumer. /healthz is polled all through the start. Before, a stage was
// healthy as soon as its first check (connected to NATS) passed: between
// that check and the next one's registration (for about a millisecond
// before provisioning's "streams", and replay while it created its
// consumer, one API round trip).
func TestStageHealthyOnlyWhenReady(t *testing.T) {
	cases := []struct {
		stage    string
		streams  []string
		consumer string // stream whose consumer must exist
		args     []string
	}{
		{"reassemble", []string{proto.FramesStream, proto.MsgsStream, proto.EventsStream}, proto.FramesStream, []string{"--reassemble.tls=false"}},
		{"replay", []string{proto.MsgsStream, proto.ResultsStream}, proto.MsgsStream, []string{"--replay.listen", "127.0.0.1:0=203.0.113.5:443"}},
		{"archive", []string{proto.FramesStream}, proto.FramesStream, []string{"--archive.store", ""}},
	}
	for _, tc := range cases {
		t.Run(tc.stage, func(t *testing.T) {
			_, url := natstest.Run(t)
			px := natstest.NewSlowProxy(t, url, "$JS.API.", 100*time.Millisecond)
			c := NewConfig()
			fs := flag.NewFlagSet("tapline", flag.ContinueOnError)
			c.Register(fs)
			args := append([]string{"--nats-embedded=false", "--nats-url", px.URL(), "--shards", "4", "--stages", tc.stage}, tc.args...)
			for i, a := range args {
				if a == "" {
					args[i] = t.TempDir()
				}
			}
			if err := stage.Parse(fs, args, stage.Aliases); err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			d, _ := stage.TestDeps("tapline")
			d.Health = stage.Starting()
			d.Drain = &stage.Drain{}
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- Run(ctx, c, d, nil) }()
			defer func() {
				cancel()
				select {
				case err := <-errc:
					if err != nil {
						t.Error(err)
					}
				case <-time.After(60 * time.Second):
					t.Error("Run did not return after cancel")
				}
			}()

			deadline := time.Now().Add(60 * time.Second)
			for len(d.Health.Check()) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("never healthy: %v", d.Health.Check())
				}
				select {
				case err := <-errc:
					t.Fatalf("stage stopped: %v", err)
				default:
				}
				runtime.Gosched()
			}
			// Healthy: what the stage needs must exist now (asked
			// directly, not through the slow proxy).
			nc, err := nats.Connect(url)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ictx, icancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer icancel()
			for _, name := range tc.streams {
				if _, err := js.Stream(ictx, name); err != nil {
					t.Errorf("healthy while stream %s does not exist: %v", name, err)
				}
			}
			if tc.consumer != "" {
				st, err := js.Stream(ictx, tc.consumer)
				if err == nil {
					if n := len(consumerNames(ictx, st)); n == 0 {
						t.Errorf("healthy while %s has no consumer", tc.consumer)
					}
				}
			}
		})
	}
}

// consumerNames lists a stream's consumers.
func consumerNames(ctx context.Context, st jetstream.Stream) []string {
	var out []string
	l := st.ConsumerNames(ctx)
	for n := range l.Name() {
		out = append(out, n)
	}
	return out
}
