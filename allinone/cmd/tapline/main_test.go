package main

// The all-in-one as a user runs it: `tapline run` as a separate process on
// free loopback ports, configured by flags and TAPLINE_* environment,
// fed a capture through decap send, stopped with SIGTERM.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/allinone/testsystem"
	"github.com/tapline/tapline/decap/send"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// TestMain lets the test binary act as the tapline command when asked, so
// the tests run it as a real process without building it.
func TestMain(m *testing.M) {
	if os.Getenv("TAPLINE_TEST_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func tapline(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "TAPLINE_TEST_AS_MAIN=1")
	return cmd
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond every 50 ms for up to a generous minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRunProcess(t *testing.T) {
	const secret = "pr0cess-s3cret-pw"
	dir := t.TempDir()
	ts, err := testsystem.Start("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	udpPort := freePort(t, "udp")

	var stderr bytes.Buffer
	cmd := tapline("run",
		"--nats-listen", "127.0.0.1:0",
		"--http", httpAddr,
		"--decap.listen-addr", "127.0.0.1",
		"--decap.geneve-port", "0",
		"--replay.target", ts.URL(),
		"--replay.pace", "fast",
		"--replay.compare=false",
	)
	cmd.Dir = dir // the default ./.tapline/nats store lands here
	cmd.Env = append(cmd.Env,
		fmt.Sprintf("TAPLINE_DECAP_VXLAN_PORT=%d", udpPort),
		"TAPLINE_ARCHIVE_STORE="+filepath.Join(dir, "archive"),
		"TAPLINE_REASSEMBLE_IDLE_TIMEOUT=2s",
		// Credentials the embedded server does not ask for: they must
		// reach no log line of any stage.
		"TAPLINE_NATS_USER=tapline",
		"TAPLINE_NATS_PASSWORD="+secret,
		"TAPLINE_LOG_LEVEL=debug",
	)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	ctx := context.Background()
	waitFor(t, "/healthz", func() bool { return stage.Probe(ctx, httpAddr, 5*time.Second) == nil })
	hc := tapline("healthcheck", "--http", httpAddr)
	if out, err := hc.CombinedOutput(); err != nil {
		t.Fatalf("tapline healthcheck on a healthy all-in-one: %v %s", err, out)
	}
	metrics := func() string {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// decap's sockets are open when its socket gauge is exported.
	waitFor(t, "decap listening", func() bool { return strings.Contains(metrics(), "tapline_decap_udp_sockets{") })

	capture := filepath.Join("..", "..", "..", "testdata", "captures", "ws-broker-json.pcap")
	res, err := send.Send(ctx, send.Config{File: capture, To: fmt.Sprintf("127.0.0.1:%d", udpPort), VNI: 7, Top: true, Loop: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the test system to receive the 4 client messages", func() bool { return len(ts.Messages()) >= 4 })
	m := metrics()
	for _, want := range []string{`tapline_decap_packets_total{encap="vxlan",vni="7"} 22`, "tapline_reassemble_messages_total", "tapline_replay_messages_total", "tapline_archive_"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// SIGTERM: every stage drains, the process exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("tapline run after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("tapline run did not stop within 90s of SIGTERM\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "stopped cleanly") {
		t.Errorf("no clean stop in the log:\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), secret) {
		t.Errorf("the NATS password appears in the log")
	}
	if out, err := tapline("healthcheck", "--http", httpAddr).CombinedOutput(); err == nil {
		t.Errorf("tapline healthcheck succeeded after the stop: %s", out)
	}

	// The archive stored its open chunk while draining.
	var chunks int
	_ = filepath.WalkDir(filepath.Join(dir, "archive"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".zst") {
			chunks++
		}
		return nil
	})
	if chunks == 0 {
		t.Errorf("no archive chunk under %s", filepath.Join(dir, "archive"))
	}

	// The JetStream store persists: a server on the same store sees the
	// frames, the messages and the replay results.
	srv, err := natstest.Start(natstest.Options{StoreDir: filepath.Join(dir, ".tapline", "nats")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	count := func(name string) uint64 {
		var n uint64
		waitFor(t, "stream "+name, func() bool {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			s, err := js.Stream(cctx, name)
			if err != nil {
				return false
			}
			n = s.CachedInfo().State.Msgs
			return true
		})
		return n
	}
	if n := count(proto.FramesStream); n == 0 {
		t.Errorf("%s empty", proto.FramesStream)
	}
	if n := count(proto.MsgsStream); n < 8 {
		t.Errorf("%s holds %d entries, want the open event, 9 messages and the close event", proto.MsgsStream, n)
	}
	if n := count(proto.ResultsStream); n < 4 {
		t.Errorf("%s holds %d results, want at least 4", proto.ResultsStream, n)
	}
	_ = res
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"run", "--stages", "decap,bogus"}, 2, `unknown stage "bogus"`},
		{[]string{"run", "--decap.vxlan-port", "70000"}, 2, "decap: --vxlan-port"},
		{[]string{"run", "--nats-max-store", "1000"}, 2, "--nats-max-store"},
		{[]string{"run", "--help"}, 0, "--decap.vxlan-port"},
		{[]string{"help"}, 0, "testsystem"},
	} {
		cmd := tapline(tc.args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("tapline %v: exit %d, output %q; want exit %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}
