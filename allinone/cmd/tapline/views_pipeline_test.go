package main

// A real pipeline for the view commands' tests: `tapline run` as a
// process against an external JetStream server, fed real captures through
// decap send: a WebSocket connection without loss, a TCP connection with
// holes (tcp-gaps-truncated-http.pcap, the mirror lost bytes), and a
// capture on a VNI decap filters, so decap reports drops.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/allinone/testsystem"
	"github.com/tapline/tapline/decap/send"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// viewPipeline is a running all-in-one and what was sent through it.
type viewPipeline struct {
	url      string // NATS
	js       jetstream.JetStream
	udpPort  int
	filtered int // datagrams sent on a VNI decap does not allow
	ts       *testsystem.Server
}

func capturePath(name string) string {
	return filepath.Join("..", "..", "..", "testdata", "captures", name)
}

// startViewPipeline runs the all-in-one (decap, reassemble, replay) on
// an external JetStream server and waits until decap listens.
func startViewPipeline(t *testing.T) *viewPipeline {
	t.Helper()
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	ts, err := testsystem.Start("127.0.0.1:0", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })
	p := &viewPipeline{url: url, js: js, udpPort: freePort(t, "udp"), ts: ts}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	var stderr bytes.Buffer
	cmd := tapline("run",
		"--nats-embedded=false", "--nats-url", url,
		"--stages", "decap,reassemble,replay",
		"--http", httpAddr,
		"--log-level", "warn",
		"--decap.listen-addr", "127.0.0.1",
		"--decap.vxlan-port", fmt.Sprint(p.udpPort),
		"--decap.geneve-port", "0",
		"--decap.vni", "7",
		"--decap.events-interval", "200ms",
		"--reassemble.idle-timeout", "2s",
		"--replay.target", ts.URL(),
		"--replay.pace", "fast",
		"--replay.compare=false",
	)
	cmd.Dir = t.TempDir()
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("tapline run log:\n%s", stderr.String())
		}
	})
	ctx := context.Background()
	waitFor(t, "/healthz", func() bool { return stage.Probe(ctx, httpAddr, 5*time.Second) == nil })
	waitFor(t, "decap listening", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "tapline_decap_udp_sockets{")
	})
	return p
}

// send mirrors a capture to decap as AWS would, on vni.
func (p *viewPipeline) send(t *testing.T, name string, vni int) send.Result {
	t.Helper()
	res, err := send.Send(context.Background(), send.Config{File: capturePath(name), To: fmt.Sprintf("127.0.0.1:%d", p.udpPort), VNI: vni, Top: true, Loop: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// feed sends the lossless WebSocket capture, the lossy TCP capture and one
// on a filtered VNI, and waits until both connections are closed, replay
// summarised them and decap reported the filtered datagrams.
func (p *viewPipeline) feed(t *testing.T) {
	t.Helper()
	p.send(t, "ws-broker-json.pcap", 7)
	p.send(t, "tcp-gaps-truncated-http.pcap", 7)
	p.filtered = int(p.send(t, "ws-basic-echo-timer.pcap", 99).Packets)
	waitFor(t, "both connections closed and replayed", func() bool {
		s, res := p.ledger(t)
		n := 0
		for _, c := range s.Closes() {
			if len(res.Summaries(c.Conn)) > 0 {
				n++
			}
		}
		return len(s.Closes()) >= 2 && n >= 2
	})
	waitFor(t, "decap's drop report", func() bool {
		out, _ := tapline("sub", "tapline.events.decap.drops", "--last", "1", "--no-follow", "--nats-url", p.url).Output()
		return strings.Contains(string(out), fmt.Sprintf(`"vni":%d`, p.filtered))
	})
}

// ledger reads the streams as the ledger does.
func (p *viewPipeline) ledger(t *testing.T) (*ledger.Stream, *ledger.Results) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := ledger.ReadStream(ctx, p.js)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ledger.ReadResults(ctx, p.js)
	if err != nil {
		res = ledger.NewResults() // replay has not provisioned its stream yet
	}
	return s, res
}

// consumers lists the consumers of the streams the views read.
func (p *viewPipeline) consumers(t *testing.T) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]bool{}
	for _, name := range []string{proto.MsgsStream, proto.ResultsStream, proto.EventsStream} {
		st, err := p.js.Stream(ctx, name)
		if err != nil {
			continue
		}
		l := st.ConsumerNames(ctx)
		for n := range l.Name() {
			out[name+"/"+n] = true
		}
		if err := l.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// noNewConsumers fails when a view command left a consumer behind.
func (p *viewPipeline) noNewConsumers(t *testing.T, before map[string]bool) {
	t.Helper()
	for n := range p.consumers(t) {
		if !before[n] {
			t.Errorf("consumer %s left behind", n)
		}
	}
}
