package stage

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// TestProvisionStreamsWarnsKept: a stage finding a stream configured with
// other limits keeps it, says so in one warning naming the difference and
// --update-streams, and is healthy; with --update-streams it changes it.
func TestProvisionStreamsWarnsKept(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	user := proto.StreamOptions{Msgs: proto.StreamLimits{MaxBytes: 4 << 30}}
	if err := proto.EnsureStreams(ctx, js, user, proto.MsgsStream); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d, _ := TestDeps("test")
	d.Log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := ProvisionStreams(ctx, d, js, proto.StreamOptions{}, proto.MsgsStream, proto.ResultsStream); err != nil {
		t.Fatal(err)
	}
	if f := d.Health.Check(); len(f) > 0 {
		t.Errorf("not healthy after provisioning: %v", f)
	}
	out := logs.String()
	if n := strings.Count(out, "kept as it is"); n != 1 || !strings.Contains(out, "max_bytes: stream 4.0GiB, options 8.0GiB") || !strings.Contains(out, "--update-streams") {
		t.Errorf("want one warning naming the difference and --update-streams:\n%s", out)
	}
	s, err := js.Stream(ctx, proto.MsgsStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxBytes; got != 4<<30 {
		t.Fatalf("max_bytes %d: the user's 4 GiB was changed", got)
	}
	logs.Reset()
	if err := ProvisionStreams(ctx, d, js, proto.StreamOptions{Update: true}, proto.MsgsStream); err != nil {
		t.Fatal(err)
	}
	if s, err = js.Stream(ctx, proto.MsgsStream); err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxBytes; got != 8<<30 || !strings.Contains(logs.String(), "changed to this stage's settings") {
		t.Fatalf("--update-streams: max_bytes %d, log:\n%s", got, logs.String())
	}
}
