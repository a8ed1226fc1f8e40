package keys

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// TestOneShotFile: without --follow the file is published and Run returns
// nil once every key line is stored; comments are skipped, a malformed line
// is counted, and a last line without "\n" is published at the end.
func TestOneShotFile(t *testing.T) {
	url, js := serve(t)
	path := filepath.Join(t.TempDir(), "keylog")
	lines := keyLines("oneshot", 0, 3000)
	body := "# SSL/TLS secrets log file\n" + strings.Join(lines[:1000], "") + "not a key line\n" + strings.Join(lines[1000:], "")
	body = strings.TrimSuffix(body, "\n") // the last line is partial
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(url, path)
	d, reg := stage.TestDeps("decap-keys")
	if err := Run(context.Background(), cfg, d); err != nil {
		t.Fatal(err)
	}
	got := stored(t, js, proto.KeysSubject(cfg.Source))
	if len(got) != len(lines) {
		t.Fatalf("stored %d lines, want %d", len(got), len(lines))
	}
	for i := range got {
		if got[i] != lines[i] {
			t.Fatalf("line %d differs", i)
		}
	}
	if v := counter(t, reg, "tapline_keys_lines_bad_total"); v != 1 {
		t.Errorf("bad lines %v, want 1", v)
	}
	if v := counter(t, reg, "tapline_keys_lines_published_total"); v != float64(len(lines)) {
		t.Errorf("published %v, want %d", v, len(lines))
	}
	if v := counter(t, reg, "tapline_keys_lines_read_total"); v != float64(len(lines)+2) {
		t.Errorf("read %v, want %d", v, len(lines)+2)
	}
	if m := counter(t, reg, "tapline_keys_messages_published_total"); m < 2 {
		t.Errorf("%v messages: not batched by --batch-bytes", m)
	}

	// The same file again within the duplicate window: every message has
	// the same id, so nothing is stored twice.
	d2, reg2 := stage.TestDeps("decap-keys")
	if err := Run(context.Background(), cfg, d2); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, js, proto.KeysSubject(cfg.Source)); len(got) != len(lines) {
		t.Errorf("after a second run %d lines stored, want %d", len(got), len(lines))
	}
	if counter(t, reg2, "tapline_keys_messages_duplicate_total") != counter(t, reg2, "tapline_keys_messages_published_total") {
		t.Error("second run's messages not all reported duplicate")
	}
}

// TestStdin: "-" reads stdin to its end, the partial last line included.
func TestStdin(t *testing.T) {
	url, js := serve(t)
	lines := keyLines("stdin", 0, 50)
	cfg := testConfig(url, "-")
	cfg.Stdin = strings.NewReader(strings.TrimSuffix(strings.Join(lines, ""), "\n"))
	d, _ := stage.TestDeps("decap-keys")
	if err := Run(context.Background(), cfg, d); err != nil {
		t.Fatal(err)
	}
	waitStored(t, js, proto.KeysSubject(cfg.Source), lines)
}

// TestStdinSlowWriter: a pipe fed slowly is shipped as it comes, not held
// until a batch fills or the pipe closes.
func TestStdinSlowWriter(t *testing.T) {
	url, js := serve(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	cfg := testConfig(url, "-")
	cfg.Stdin = pr
	cfg.Follow = true
	start(t, cfg)
	lines := keyLines("pipe", 0, 3)
	if _, err := pw.WriteString(strings.Join(lines, "")); err != nil {
		t.Fatal(err)
	}
	waitStored(t, js, proto.KeysSubject(cfg.Source), lines)
}

// TestUnreachable: with no NATS server, a run without --follow ends with a
// clear error after --timeout instead of hanging, and Main exits 1.
func TestUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keylog")
	if err := os.WriteFile(path, []byte(keyLine("u", 0)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("nats://127.0.0.1:1", path)
	cfg.Timeout = time.Second
	d, _ := stage.TestDeps("decap-keys")
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), cfg, d) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("Run = %v, want an unreachable error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run still running 60s after a 1s --timeout with NATS unreachable")
	}
	// Without provisioning, the publish is what times out.
	cfg.Provision = false
	d, _ = stage.TestDeps("decap-keys")
	if err := Run(context.Background(), cfg, d); err == nil || !strings.Contains(err.Error(), "0 of 1 key lines stored") {
		t.Fatalf("Run without provisioning = %v", err)
	}
	if code := Main([]string{"--nats-url", "nats://127.0.0.1:1", "--timeout", "1s", path}); code != 1 {
		t.Errorf("Main exit %d, want 1", code)
	}
}

// TestExitCodes: flags and FILE are checked before anything runs.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, 0},
		{[]string{}, 2},
		{[]string{"a", "b"}, 2},
		{[]string{"--batch-bytes", "10", "f"}, 2},
		{[]string{"--nats-url", "nats://127.0.0.1:1", "--timeout", "1s", "/nonexistent/keylog"}, 1},
	} {
		if code := Main(tc.args); code != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.args, code, tc.want)
		}
	}
}

// TestNotProvisioned: a producer not allowed to create streams
// (--provision=false) stores into the stream another stage created.
func TestNotProvisioned(t *testing.T) {
	url, js := serve(t)
	if err := proto.EnsureStreams(context.Background(), js, proto.StreamOptions{}, proto.KeysStream); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keylog")
	lines := keyLines("np", 0, 10)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(url, path)
	cfg.Provision = false
	d, _ := stage.TestDeps("decap-keys")
	if err := Run(context.Background(), cfg, d); err != nil {
		t.Fatal(err)
	}
	waitStored(t, js, proto.KeysSubject(cfg.Source), lines)
}

var _ = natstest.Run

// TestExistingStreamDifferencesWarned: a TAPLINE_KEYS that another stage
// or a user created with other limits is kept and the run says how it
// differs, like every stage (it was kept without a word).
func TestExistingStreamDifferencesWarned(t *testing.T) {
	url, js := serve(t)
	other := proto.StreamOptions{Keys: proto.StreamLimits{MaxAge: time.Hour, MaxBytes: 1 << 20}}
	if _, err := proto.ProvisionStreams(context.Background(), js, other, proto.KeysStream); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keylog")
	lines := keyLines("diff", 0, 2)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(url, path)
	d, _ := stage.TestDeps("decap-keys")
	var logs bytes.Buffer
	d.Log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := Run(context.Background(), cfg, d); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "stream exists with other settings") {
		t.Errorf("no warning about the stream's other settings:\n%s", logs.String())
	}
	waitStored(t, js, proto.KeysSubject(cfg.Source), lines)
}
