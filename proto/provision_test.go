package proto_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// userStream creates TAPLINE_FRAMES as a user (or another stage) would,
// with limits other than the defaults: 4 GiB and 1 h.
func userStream(t *testing.T, js jetstream.JetStream, replicas int) jetstream.StreamConfig {
	t.Helper()
	cfg, err := proto.StreamOptions{Replicas: replicas, Frames: proto.StreamLimits{MaxAge: time.Hour, MaxBytes: 4 << 30}}.StreamConfig(proto.FramesStream)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

// TestProvisionKeepsExistingStream: a stream that exists with other limits
// is kept as it is, whichever stage starts last; the differences are
// reported.
func TestProvisionKeepsExistingStream(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	userStream(t, js, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Through the old entry point too: no stage changes the stream.
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.FramesStream); err != nil {
		t.Fatal(err)
	}
	if got := streamConfig(t, js, proto.FramesStream); got.MaxBytes != 4<<30 || got.MaxAge != time.Hour {
		t.Fatalf("provisioning changed the user's stream: max_bytes %d, max_age %s; want 4 GiB, 1h kept", got.MaxBytes, got.MaxAge)
	}
	sts, err := proto.ProvisionStreams(ctx, js, proto.StreamOptions{}, proto.FramesStream, proto.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if sts[0].Created || sts[0].Updated {
		t.Errorf("frames status %+v: want kept", sts[0])
	}
	diffs := strings.Join(sts[0].Diffs, "; ")
	if !strings.Contains(diffs, "max_bytes: stream 4.0GiB, options 8.0GiB") || !strings.Contains(diffs, "max_age: stream 1h0m0s, options 24h0m0s") {
		t.Errorf("differences %q: want max_bytes and max_age named with both values", diffs)
	}
	if len(sts[0].Diffs) != 2 {
		t.Errorf("differences %q: want exactly max_bytes and max_age", diffs)
	}
	if !sts[1].Created || len(sts[1].Diffs) != 0 {
		t.Errorf("events status %+v: want created", sts[1])
	}
	// A second pass finds both as they are.
	sts, err = proto.ProvisionStreams(ctx, js, proto.StreamOptions{}, proto.EventsStream)
	if err != nil || sts[0].Created || len(sts[0].Diffs) != 0 {
		t.Errorf("second pass: %+v, %v; want found unchanged", sts, err)
	}
}

// TestProvisionUpdateStreams: with --update-streams the existing stream
// is changed to the options, and the change is reported.
func TestProvisionUpdateStreams(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	userStream(t, js, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sts, err := proto.ProvisionStreams(ctx, js, proto.StreamOptions{Update: true}, proto.FramesStream)
	if err != nil {
		t.Fatal(err)
	}
	if !sts[0].Updated || len(sts[0].Diffs) != 2 {
		t.Errorf("status %+v: want updated, with the two differences", sts[0])
	}
	if got := streamConfig(t, js, proto.FramesStream); got.MaxBytes != 8<<30 || got.MaxAge != 24*time.Hour {
		t.Fatalf("after --update-streams: max_bytes %d, max_age %s; want the defaults", got.MaxBytes, got.MaxAge)
	}
}

// TestProvisionConcurrentStages: stages starting together with different
// limits on an R3 cluster: exactly one creates the stream, the others
// find it and keep it, whatever the order; an unanswered attempt is
// retried, never a second create.
func TestProvisionConcurrentStages(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	_, js := natstest.Connect(t, c.URLs())
	var wg sync.WaitGroup
	sts := make([]proto.StreamStatus, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := proto.StreamOptions{Replicas: 3, Frames: proto.StreamLimits{MaxBytes: int64(i+1) << 30}}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// As the stages do: a failed attempt (a lookup unanswered
			// while another stage creates the stream, no placement yet
			// on a cluster just formed) is made again.
			for {
				var s []proto.StreamStatus
				s, errs[i] = proto.ProvisionStreams(ctx, js, o, proto.FramesStream)
				if errs[i] == nil {
					sts[i] = s[0]
				}
				if errs[i] == nil || ctx.Err() != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	got := streamConfig(t, js, proto.FramesStream)
	created := 0
	for i, st := range sts {
		if st.Created {
			created++
			if got.MaxBytes != int64(i+1)<<30 {
				t.Errorf("stage %d created the stream but it has max_bytes %d", i, got.MaxBytes)
			}
			continue
		}
		if got.MaxBytes != int64(i+1)<<30 && len(st.Diffs) != 1 {
			t.Errorf("stage %d (max_bytes %d GiB): status %+v, want the max_bytes difference reported", i, i+1, st)
		}
	}
	if created != 1 {
		t.Errorf("%d stages created the stream, want 1", created)
	}
	if got.Replicas != 3 {
		t.Errorf("replicas %d, want 3", got.Replicas)
	}
}

// TestProvisionUnansweredIsNotMissing: when JetStream cannot answer (two
// of three nodes down: no meta leader, no stream leader) provisioning
// fails with an error that says so, and creates or changes nothing; when
// the nodes are back the stream is there with its messages and settings.
func TestProvisionUnansweredIsNotMissing(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	nc, js := natstest.Connect(t, c.URLs())
	want := userStream(t, js, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := js.Publish(ctx, proto.FramesSubject(1, 0), []byte("stored before the outage")); err != nil {
		t.Fatal(err)
	}
	// Keep the node the test client is connected to.
	keep := -1
	for i := range 3 {
		if s := c.Server(i); s != nil && strings.HasSuffix(nc.ConnectedUrl(), s.Addr().String()) {
			keep = i
		}
	}
	if keep < 0 {
		t.Fatalf("client connected to %s, which is no node", nc.ConnectedUrl())
	}
	var down []int
	for i := range 3 {
		if i != keep {
			c.Kill(i)
			down = append(down, i)
		}
	}
	actx, acancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := proto.ProvisionStreams(actx, js, proto.StreamOptions{Replicas: 3, Update: true}, proto.FramesStream)
	acancel()
	if err == nil {
		t.Fatal("provisioning succeeded with two of three nodes down")
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) || !proto.Unanswered(err) {
		t.Fatalf("error %v: want an unanswered request (timeout or no responders), not a missing stream", err)
	}
	for _, i := range down {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	var info *jetstream.StreamInfo
	for info == nil {
		if ctx.Err() != nil {
			t.Fatal("stream not back after the nodes restarted")
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		if s, err := js.Stream(rctx, proto.FramesStream); err == nil {
			info = s.CachedInfo()
		}
		rcancel()
	}
	if info.State.Msgs != 1 || info.Config.MaxBytes != want.MaxBytes || info.Config.MaxAge != want.MaxAge {
		t.Fatalf("after the outage: %d messages, max_bytes %d, max_age %s; want 1, %d, %s", info.State.Msgs, info.Config.MaxBytes, info.Config.MaxAge, want.MaxBytes, want.MaxAge)
	}
}
