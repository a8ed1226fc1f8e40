package keys

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// keyLine is the i-th test key line of a test run, tag telling runs apart,
// with its "\n".
func keyLine(tag string, i int) string {
	r := sha256.Sum256([]byte(fmt.Sprintf("random %s %d", tag, i)))
	s := sha512.Sum512([]byte(fmt.Sprintf("secret %s %d", tag, i)))
	labels := []string{"CLIENT_RANDOM", "CLIENT_TRAFFIC_SECRET_0", "SERVER_HANDSHAKE_TRAFFIC_SECRET"}
	n := 48
	if i%3 != 0 {
		n = 32
	}
	return labels[i%3] + " " + hex.EncodeToString(r[:]) + " " + hex.EncodeToString(s[:n]) + "\n"
}

func keyLines(tag string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, keyLine(tag, i))
	}
	return out
}

// testConfig is a Config for a test against url, reading path.
func testConfig(url, path string) Config {
	cfg := DefaultConfig()
	cfg.Common.NATSURL = url
	cfg.Common.HTTPAddr = ""
	cfg.Common.Streams.Memory = false
	cfg.Path = path
	cfg.Source = "prod-host.example"
	cfg.Poll = 20 * time.Millisecond
	cfg.AckTimeout = 2 * time.Second
	cfg.Timeout = 5 * time.Second
	return cfg
}

// started is a Run in the background.
type started struct {
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

func start(t *testing.T, cfg Config) *started {
	t.Helper()
	d, reg := stage.TestDeps("decap-keys")
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{cancel: cancel, done: make(chan error, 1), reg: reg}
	go func() { s.done <- Run(ctx, cfg, d) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return 30s after cancel")
		}
	})
	return s
}

// stop ends a follow run and returns its error.
func (s *started) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30s after cancel")
		return nil
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// stored returns every line stored in TAPLINE_KEYS, in order, checking that
// every message is on subject and holds whole lines.
func stored(t *testing.T, js jetstream.JetStream, subject string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, proto.KeysStream)
	if err != nil {
		return nil
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		if m.Subject != subject {
			t.Fatalf("message %d on %s, want %s", seq, m.Subject, subject)
		}
		body := string(m.Data)
		if body == "" || !strings.HasSuffix(body, "\n") {
			t.Fatalf("message %d does not end in a newline: %d bytes", seq, len(body))
		}
		if m.Header.Get("Nats-Msg-Id") == "" {
			t.Fatalf("message %d has no Nats-Msg-Id", seq)
		}
		for _, l := range strings.SplitAfter(body, "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
	}
	return lines
}

// waitStored waits until exactly want is stored (in order), failing on any
// line stored twice or unexpected.
func waitStored(t *testing.T, js jetstream.JetStream, subject string, want []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := stored(t, js, subject)
		if len(got) > len(want) {
			t.Fatalf("stored %d lines, want %d (duplicates or foreign lines)", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("line %d stored differs from line written", i)
			}
		}
		if len(got) == len(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored %d of %d lines after 60s", len(got), len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func appendFile(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "")); err != nil {
		t.Fatal(err)
	}
}

func serve(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	return url, js
}

func hasCounter(reg *prometheus.Registry, name string) bool {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			return true
		}
	}
	return false
}
