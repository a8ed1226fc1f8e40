package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/allinone"
	"github.com/tapline/tapline/allinone/testsystem"
	"github.com/tapline/tapline/decap/send"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/replay"
)

// taplineOut runs the tapline command and returns its combined output and
// exit code.
func taplineOut(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := tapline(args...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// `tapline --help` lists the sub-commands (it used to print run's flags).
func TestHelpListsCommands(t *testing.T) {
	for _, h := range []string{"--help", "-h", "help"} {
		out, code := taplineOut(t, nil, h)
		if code != 0 || !strings.Contains(out, "testsystem") || !strings.Contains(out, "demo") || !strings.Contains(out, "ledger") {
			t.Errorf("tapline %s: exit %d\n%s", h, code, out)
		}
	}
}

// A stray word after `tapline run` exits 2 with one line.
func TestRunStrayArgument(t *testing.T) {
	out, code := taplineOut(t, nil, "run", "--http", "", "stray")
	if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, `"stray"`) {
		t.Errorf("tapline run stray: exit %d, output %q", code, out)
	}
}

// tapline demo reads TAPLINE_DEMO_* (TAPLINE_DIR is replay's --dir) and
// says so in its help; the size flags show units.
func TestDemoEnvNames(t *testing.T) {
	out, code := taplineOut(t, []string{"TAPLINE_DIR=c2s"}, "demo", "--help")
	if code != 0 || !strings.Contains(out, "[$TAPLINE_DEMO_DIR]") || strings.Contains(out, "[$TAPLINE_DIR]") {
		t.Errorf("tapline demo --help: exit %d\n%s", code, out)
	}
	out, code = taplineOut(t, []string{"TAPLINE_DEMO_VNI=x"}, "demo")
	if code != 2 || !strings.Contains(out, "TAPLINE_DEMO_VNI") {
		t.Errorf("TAPLINE_DEMO_VNI not read: exit %d %q", code, out)
	}
	out, code = taplineOut(t, nil, "run", "--help")
	if code != 0 || !strings.Contains(out, "(default 16GiB)") {
		t.Errorf("tapline run --help shows no size units:\n%s", out)
	}
}

// Every taken port is named in one line with the flag that moves it, and
// tapline run exits 2 before opening any.
func TestRunPortsTaken(t *testing.T) {
	httpL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer httpL.Close()
	natsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer natsL.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	cmd := tapline("run", "--http", httpL.Addr().String(), "--nats-listen", natsL.Addr().String(),
		"--decap.listen-addr", "127.0.0.1", "--decap.geneve-port", "0",
		"--decap.vxlan-port", fmt.Sprint(udp.LocalAddr().(*net.UDPAddr).Port))
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("tapline run on taken ports: %v, output %q; want exit 2 and one line", err, out)
	}
	for _, want := range []string{"--http", "--nats-listen", "--decap.vxlan-port"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output %q does not name %s", out, want)
		}
	}
}

// tapline run --testsystem (what make run passes) replays into the
// built-in test system, which prints what it receives on stdout; replay is
// not off for want of a test system.
func TestRunIntoBuiltinTestSystem(t *testing.T) {
	dir := t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	tsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	udpPort := freePort(t, "udp")
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	var stdout, stderr syncBuffer
	cmd := tapline("run", "--testsystem", tsAddr, "--nats-listen", natsAddr, "--http", httpAddr, "--reassemble.idle-timeout", "2s",
		"--decap.listen-addr", "127.0.0.1", "--decap.geneve-port", "0", "--decap.vxlan-port", fmt.Sprint(udpPort),
		"--replay.pace", "fast", "--archive.store", filepath.Join(dir, "archive"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
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
	waitFor(t, "decap listening", func() bool { return strings.Contains(stderr.String(), "listening") })
	capture := filepath.Join("..", "..", "..", "testdata", "captures", "ws-broker-json.pcap")
	if _, err := send.Send(ctx, send.Config{File: capture, To: fmt.Sprintf("127.0.0.1:%d", udpPort), VNI: 7, Top: true, Loop: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the built-in test system to print a message", func() bool { return strings.Contains(stdout.String(), "test system: connection") })
	if strings.Contains(stderr.String(), "stage off") {
		t.Errorf("a stage is off:\n%s", stderr.String())
	}
	// Comparison is on (the default), but the built-in test system never
	// answers: the connection is "sent", not compared, and says why — not
	// a mismatch for every production response.
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var summaries []*nats.Header
	waitFor(t, "a connection summary on "+proto.ResultsStream, func() bool {
		summaries = nil
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		cons, err := js.OrderedConsumer(cctx, proto.ResultsStream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return false
		}
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return false
		}
		for m := range batch.Messages() {
			h := m.Headers()
			if h.Get(proto.HdrKind) == "summary" {
				summaries = append(summaries, &h)
			}
			if h.Get(proto.HdrResult) == "mismatch" {
				t.Errorf("mismatch reported against the built-in test system: %v", h)
			}
		}
		return len(summaries) > 0
	})
	for _, h := range summaries {
		if h.Get(proto.HdrResult) != "sent" || !strings.Contains(h.Get(proto.HdrReason), "sink") {
			t.Errorf("summary %v: want result sent, reason naming the sink", *h)
		}
	}
	if testsystem.SinkHeader != replay.SinkHeader {
		t.Errorf("the test system announces %q, replay looks for %q", testsystem.SinkHeader, replay.SinkHeader)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
}

// syncBuffer is a bytes.Buffer a child process and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Every size flag of every stage takes units and raw integers alike.
func TestEverySizeFlagTakesUnits(t *testing.T) {
	cfg := allinone.NewConfig()
	fs := flag.NewFlagSet("tapline", flag.ContinueOnError)
	cfg.Register(fs)
	sizeish := []string{"bytes", "size", "max-memory", "rcvbuf", "max-datagram", "max-header", "max-message", "reorder-window", "max-seq-jump", "max-flow-rate", "nats-max-store", "max-pending"}
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		match := false
		for _, s := range sizeish {
			match = match || strings.Contains(f.Name, s)
		}
		if !match || strings.HasSuffix(f.Name, "-batches") || strings.HasSuffix(f.Name, "rate-bytes") {
			return
		}
		n++
		for _, v := range []string{"2MiB", "2097152"} {
			if err := f.Value.Set(v); err != nil {
				t.Errorf("--%s %s: %v", f.Name, v, err)
			} else if got := f.Value.String(); got != "2MiB" {
				t.Errorf("--%s %s reads back as %q", f.Name, v, got)
			}
		}
	})
	if n < 15 {
		t.Errorf("only %d size flags found", n)
	}
}
