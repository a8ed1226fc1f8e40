package allinone

import (
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
)

// setNATSConfEnv sets the environment compose.yaml gives the nats
// container (the stage users' passwords deploy/nats/nats.conf reads).
func setNATSConfEnv(t *testing.T, nats types.ServiceConfig) {
	t.Helper()
	n := 0
	for k, v := range nats.Environment {
		if strings.HasPrefix(k, "NATS_") && v != nil {
			t.Setenv(k, *v)
			n++
		}
	}
	if n == 0 {
		t.Fatal("compose.yaml gives the nats service no NATS_* passwords: authentication is off")
	}
}

// startComposeNATS runs a real server from deploy/nats/nats.conf with the
// environment compose.yaml gives it (loopback, any port, a temporary
// store).
func startComposeNATS(t *testing.T, p *types.Project) string {
	t.Helper()
	setNATSConfEnv(t, p.Services["nats"])
	opts, err := server.ProcessConfigFile(filepath.Join(repoRoot, "deploy/nats/nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return srv.ClientURL()
}

// composeNATSFlags turns a stage's NATS environment in compose.yaml into
// its flags.
func composeNATSFlags(t *testing.T, svc types.ServiceConfig) []string {
	t.Helper()
	var args []string
	for _, name := range []string{"TAPLINE_NATS_USER", "TAPLINE_NATS_PASSWORD", "TAPLINE_NATS_INBOX_PREFIX"} {
		if v, ok := svc.Environment[name]; ok && v != nil {
			args = append(args, "--"+strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "TAPLINE_")), "_", "-"), *v)
		}
	}
	if len(args) < 4 {
		t.Fatalf("%s: compose.yaml gives it no NATS user and password", svc.Name)
	}
	return args
}

// runComposeStage runs one stage as compose configures its NATS access,
// with extra flags; it returns when Run does (or at once for long-running
// stages, with wait false).
func runComposeStage(t *testing.T, ctx context.Context, p *types.Project, url, name string, extra ...string) (*stage.Health, chan error) {
	t.Helper()
	s := NewConfig().Stage(name)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	s.Register(fs)
	args := append([]string{"--nats-url", url, "--http", "", "--shards", "16"}, composeNATSFlags(t, p.Services[name])...)
	if err := fs.Parse(append(args, extra...)); err != nil {
		t.Fatal(err)
	}
	if err := s.Common.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	d, _ := stage.TestDeps(name)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, d) }()
	return d.Health, done
}

// TestComposeNATSAuth: compose's NATS has authentication on, and every
// stage with the user, password and inbox prefix compose.yaml gives it
// runs the pipeline against a real server started from
// deploy/nats/nats.conf: a capture read by decap reaches the test system,
// the archive takes every frame. decap's and archive's users cannot read
// the messages stream nor replay's deliveries.
func TestComposeNATSAuth(t *testing.T) {
	p := loadCompose(t)
	if hasPort(p.Services["nats"], 4222, "tcp") {
		t.Errorf("compose publishes the NATS client port on the host")
	}
	url := startComposeNATS(t, p)

	// Nobody gets in without a user.
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("compose's NATS accepts a client without credentials")
	}

	var mu sync.Mutex
	got := 0
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		for {
			if _, _, err := c.Read(r.Context()); err != nil {
				return
			}
			mu.Lock()
			got++
			mu.Unlock()
		}
	}))
	defer ts.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var long []chan error
	for _, st := range []struct {
		name  string
		extra []string
	}{
		{"reassemble", nil},
		{"replay", []string{"--target", "ws" + strings.TrimPrefix(ts.URL, "http"), "--compare=false"}},
		{"archive", []string{"--store", t.TempDir(), "--chunk-age", "1s"}},
	} {
		_, done := runComposeStage(t, ctx, p, url, st.name, st.extra...)
		long = append(long, done)
	}
	defer func() {
		cancel()
		for _, done := range long {
			if err := <-done; err != nil {
				t.Errorf("stage: %v", err)
			}
		}
	}()
	_, decapDone := runComposeStage(t, ctx, p, url, "decap", "--read", filepath.Join(repoRoot, "testdata/captures/ws-broker-json.pcap"))
	select {
	case err := <-decapDone:
		if err != nil {
			t.Fatalf("decap --read: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("decap --read did not finish")
	}

	// reassemble's user may look at everything.
	admin := composeConnect(t, url, p.Services["reassemble"])
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		n := got
		mu.Unlock()
		archived, aerr := consumerDone(ctx, ajs, proto.FramesStream, "tapline-archive")
		if n >= 4 && archived {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("test system got %d of 4 messages; archive consumer done %v (%v)", n, archived, aerr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// decap's and archive's users cannot read production messages.
	for _, name := range []string{"decap", "archive"} {
		nc := composeConnect(t, url, p.Services[name])
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := js.OrderedConsumer(cctx, proto.MsgsStream, jetstream.OrderedConsumerConfig{}); err == nil {
			t.Errorf("%s's NATS user can create a consumer on %s", name, proto.MsgsStream)
		}
		if _, err := js.Stream(cctx, proto.MsgsStream); err == nil {
			t.Errorf("%s's NATS user can read %s's info", name, proto.MsgsStream)
		}
		ccancel()
		for _, subj := range []string{"tapline.msgs.>", "_INBOX_replay.>", "tapline.keys.>"} {
			if err := subscribeRefused(nc, subj); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

// composeConnect connects with the NATS user compose gives svc.
func composeConnect(t *testing.T, url string, svc types.ServiceConfig) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.UserInfo(*svc.Environment["TAPLINE_NATS_USER"], *svc.Environment["TAPLINE_NATS_PASSWORD"]),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}
	if p, ok := svc.Environment["TAPLINE_NATS_INBOX_PREFIX"]; ok && p != nil {
		opts = append(opts, nats.CustomInboxPrefix(*p))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("%s: %v", svc.Name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// subscribeRefused subscribes to subj and returns an error unless the
// server refuses it with a permissions violation.
func subscribeRefused(nc *nats.Conn, subj string) error {
	errc := make(chan error, 4)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errc <- err })
	sub, err := nc.SubscribeSync(subj)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	select {
	case err := <-errc:
		if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			return nil
		}
		return err
	case <-time.After(5 * time.Second):
		return errors.New("may subscribe to " + subj)
	}
}

// consumerDone reports whether the named durable of stream has
// acknowledged everything in it.
func consumerDone(ctx context.Context, js jetstream.JetStream, stream, prefix string) (bool, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return false, err
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return false, err
	}
	lister := st.ListConsumers(ctx)
	found := false
	for ci := range lister.Info() {
		if !strings.HasPrefix(ci.Name, prefix) {
			continue
		}
		found = true
		if ci.NumPending > 0 || ci.NumAckPending > 0 {
			return false, nil
		}
	}
	return found, lister.Err()
}
