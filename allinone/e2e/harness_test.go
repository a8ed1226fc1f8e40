package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// binDir holds the binaries TestMain built (empty when the lab cannot run
// here); buildErr says why the build failed.
var (
	binDir   string
	buildErr error
)

var binaries = map[string]string{
	"decap":      "github.com/tapline/tapline/decap/cmd/decap",
	"reassemble": "github.com/tapline/tapline/reassemble/cmd/reassemble",
	"replay":     "github.com/tapline/tapline/replay/cmd/replay",
	"archive":    "github.com/tapline/tapline/archive/cmd/archive",
	"natsd":      "github.com/tapline/tapline/allinone/e2e/natsd",
}

func TestMain(m *testing.M) {
	code := func() int {
		if mirrorlab.Available() == nil {
			dir, err := os.MkdirTemp("", "tapline-e2e-bin-*")
			if err != nil {
				buildErr = err
			} else {
				defer os.RemoveAll(dir)
				args := []string{"build", "-o", dir + "/"}
				for _, pkg := range binaries {
					args = append(args, pkg)
				}
				cmd := exec.Command("go", args...)
				if out, err := cmd.CombinedOutput(); err != nil {
					buildErr = fmt.Errorf("go build: %v\n%s", err, out)
				}
				binDir = dir
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// needLab skips when the lab cannot run (fails instead with
// TAPLINE_REQUIRE_LAB=1, as in CI) and fails when the binaries did not
// build.
func needLab(t testing.TB) {
	t.Helper()
	if err := mirrorlab.Available(); err != nil {
		mirrorlab.Unavailable(t, err.Error())
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// waitFor polls cond every 100 ms until it returns nil or the deadline
// passes; then it fails the test with cond's last error.
func waitFor(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s (%s): %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Proc is one stage (or natsd) process running inside a namespace.
type Proc struct {
	Name string
	ns   string
	bin  string
	args []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs the process (again, after a kill).
func (p *Proc) Start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "=== start %s %s\n", p.Name, strings.Join(p.args, " "))
	// ip netns exec switches namespace and execs the binary: the pid is
	// the binary's.
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.ns, p.bin}, p.args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// The process dies with the test binary (a timed-out or killed test
	// leaves nothing running).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// Pid is the running process's id.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill9 sends SIGKILL and waits for the process to end.
func (p *Proc) Kill9() {
	p.signalWait(syscall.SIGKILL, time.Minute)
}

// Stop sends SIGTERM and waits (up to 90 s, then SIGKILL).
func (p *Proc) Stop() {
	if !p.signalWait(syscall.SIGTERM, 90*time.Second) {
		p.Kill9()
	}
}

func (p *Proc) signalWait(sig syscall.Signal, d time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Tail is the end of the process's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// PipelineOptions shape the stages.
type PipelineOptions struct {
	// Listen is replay's listen mode spec addr=upstream; Target its dial
	// mode target. Exactly one is set.
	Listen, Target string
	// Shards is --shards of every stage (default 4).
	Shards int
	// Extra flags per stage name.
	Extra map[string][]string
	// NATSHost is natsd's listen address (default 127.0.0.1: reachable
	// from the target namespace only); "0.0.0.0" lets `decap capture` in
	// the production namespace upload to it.
	NATSHost string
	// NATSNodes > 1 runs a JetStream cluster of that many natsd nodes
	// (Procs "nats", "nats2", …) and gives every stage all their URLs and
	// --stream-replicas 3.
	NATSNodes int
	// Manual: NewPipeline starts NATS only; the test starts the stages.
	Manual bool
}

// natsNodeNames are the Procs names of the cluster nodes.
func natsNodeNames(n int) []string {
	names := []string{"nats"}
	for i := 2; i <= n; i++ {
		names = append(names, "nats"+strconv.Itoa(i))
	}
	return names
}

// Pipeline is NATS and the four stages in a lab's target namespace.
type Pipeline struct {
	t     testing.TB
	Lab   *mirrorlab.Lab
	Dir   string
	Store string // archive directory
	Procs map[string]*Proc
	URL   string // the stages' --nats-url
	NC    *nats.Conn
	JS    jetstream.JetStream
	opts  PipelineOptions
}

// HTTP ports of the stages inside the target namespace.
var httpPorts = map[string]int{"decap": 9101, "reassemble": 9102, "replay": 9103, "archive": 9104, "reassemble2": 9105}

const natsURL = "nats://127.0.0.1:4222"

// NewPipeline starts natsd, then every stage, in lab's target namespace and
// waits until each one is healthy. Everything is stopped when the test
// ends; stage logs are printed when it failed.
func NewPipeline(t testing.TB, lab *mirrorlab.Lab, o PipelineOptions) *Pipeline {
	t.Helper()
	if o.Shards == 0 {
		o.Shards = 4
	}
	dir := t.TempDir()
	if keep := os.Getenv("TAPLINE_E2E_KEEP"); keep != "" {
		// Debugging: keep the logs and stores in a named directory.
		dir = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
		_ = os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("pipeline files in %s", dir)
	p := &Pipeline{t: t, Lab: lab, Dir: dir, Store: filepath.Join(dir, "archive"), Procs: map[string]*Proc{}, opts: o}
	p.Procs["nats"] = &Proc{Name: "nats", ns: lab.Target, bin: filepath.Join(binDir, "natsd"),
		args: []string{"--port", "4222", "--store", filepath.Join(dir, "jetstream")}, log: filepath.Join(dir, "nats.log")}
	p.URL = natsURL
	if o.NATSNodes > 1 {
		p.clusterNATS(o.NATSNodes)
	}
	if o.NATSHost != "" {
		p.Procs["nats"].args = append(p.Procs["nats"].args, "--host", o.NATSHost)
	}
	common := func(name string) []string {
		return []string{"--nats-url", p.URL, "--shards", strconv.Itoa(o.Shards),
			"--http", "127.0.0.1:" + strconv.Itoa(httpPorts[name]), "--log-level", "info",
			// natsd's JetStream store is 16 GiB: the default limits (8 GiB
			// each for frames and messages) do not fit beside results.
			"--frames-max-bytes", "2147483648", "--msgs-max-bytes", "2147483648", "--results-max-bytes", "268435456"}
	}
	args := map[string][]string{
		"decap": {"--listen-addr", mirrorlab.TargetAddr.String(), "--vxlan-port", strconv.Itoa(lab.DstPort),
			"--geneve-port", "0", "--sockets", "2", "--batch-delay", "5ms"},
		"reassemble": {"--instance-id", "r1", "--pinned-ttl", "5s", "--takeover-spread", "0s"},
		"archive":    {"--store", p.Store, "--chunk-age", "1s", "--ack-wait", "10s"},
		"replay":     {"--pace", "fast", "--ack-wait", "10s"},
	}
	if o.NATSNodes > 1 {
		for _, name := range []string{"decap", "reassemble", "archive", "replay"} {
			args[name] = append(args[name], "--stream-replicas", "3")
		}
	}
	if o.Listen != "" {
		args["replay"] = append(args["replay"], "--listen", o.Listen)
	}
	if o.Target != "" {
		args["replay"] = append(args["replay"], "--target", o.Target)
	}
	for _, name := range []string{"decap", "reassemble", "replay", "archive"} {
		a := append(common(name), args[name]...)
		a = append(a, o.Extra[name]...)
		p.Procs[name] = &Proc{Name: name, ns: lab.Target, bin: filepath.Join(binDir, name), args: a,
			log: filepath.Join(dir, name+".log")}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"decap", "reassemble", "replay", "archive"} {
				t.Logf("--- %s metrics ---\n%s", name, p.metricsDump(name))
			}
		}
		for _, name := range []string{"replay", "reassemble", "reassemble2", "archive", "decap", "nats", "nats2", "nats3"} {
			if pr := p.Procs[name]; pr != nil && pr.Running() {
				pr.Stop()
			}
		}
		if p.NC != nil {
			p.NC.Close()
		}
		if t.Failed() {
			for _, name := range []string{"nats", "nats2", "nats3", "decap", "reassemble", "reassemble2", "replay", "archive"} {
				if pr := p.Procs[name]; pr != nil {
					t.Logf("--- %s log (tail) ---\n%s", name, pr.Tail(40))
				}
			}
		}
	})
	p.StartNATS()
	if o.Manual {
		return p
	}
	for _, name := range []string{"decap", "reassemble", "archive", "replay"} {
		p.StartStage(name)
	}
	return p
}

// StartNATS starts (or restarts) natsd and connects the test's client.
func (p *Pipeline) StartNATS() {
	t := p.t
	t.Helper()
	for _, name := range natsNodeNames(max(p.opts.NATSNodes, 1)) {
		p.Procs[name].Start(t)
	}
	if p.NC == nil {
		var nc *nats.Conn
		waitFor(t, 60*time.Second, "NATS in the target namespace", func() (err error) {
			nc, err = nats.Connect(p.URL, nats.SetCustomDialer(nsDialer{p.Lab.Target}),
				nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond), nats.Timeout(5*time.Second))
			return err
		})
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		p.NC, p.JS = nc, js
	}
	waitFor(t, 60*time.Second, "JetStream answering", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := p.JS.AccountInfo(ctx)
		return err
	})
}

// StartStage starts (or restarts) a stage and waits until /healthz is OK.
func (p *Pipeline) StartStage(name string) {
	p.t.Helper()
	pr := p.Procs[name]
	pr.Start(p.t)
	p.WaitHealthy(name)
}

// WaitHealthy polls the stage's /healthz inside the target namespace.
func (p *Pipeline) WaitHealthy(name string) {
	t := p.t
	t.Helper()
	pr := p.Procs[name]
	client := p.HTTPClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPorts[name])
	waitFor(t, 90*time.Second, name+" healthy", func() error {
		if !pr.Running() {
			t.Fatalf("%s exited:\n%s", name, pr.Tail(30))
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return nil
	})
}

// HTTPClient makes its connections inside the target namespace.
func (p *Pipeline) HTTPClient() *http.Client {
	return nsHTTPClient(p.Lab.Target)
}

// Metric reads one sample value (sum over label sets whose text contains
// every string of match) from a stage's /metrics.
func (p *Pipeline) Metric(stage, name string, match ...string) (float64, error) {
	resp, err := p.HTTPClient().Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPorts[stage]))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
lines:
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		for _, m := range match {
			if !strings.Contains(rest, m) {
				continue lines
			}
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("metric %s not found on %s", name, stage)
	}
	return sum, nil
}

// metricsDump is a stage's non-zero tapline_ samples (for failure logs).
func (p *Pipeline) metricsDump(stage string) string {
	resp, err := p.HTTPClient().Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPorts[stage]))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "tapline_") && !strings.HasSuffix(line, " 0") && !strings.Contains(line, "_bucket{") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func nsHTTPClient(ns string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: mirrorlab.DialContext(ns), DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
}

// nsDialer is a nats.CustomDialer whose connections live in a namespace.
type nsDialer struct{ ns string }

func (d nsDialer) Dial(network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return mirrorlab.DialContext(d.ns)(ctx, network, address)
}

// Entry is one entry of TAPLINE_MSGS.
type Entry struct {
	Kind  proto.Kind
	Chunk proto.Chunk // data entries
	Size  int         // body length
	SHA   string      // SHA-256 of a data entry's body (one chunk)
	Open  *proto.OpenEvent
	Gap   *proto.GapEvent
	Close *proto.CloseEvent
}

// Entries reads the whole messages stream as it is now (data bodies are
// not kept).
func (p *Pipeline) Entries() ([]Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := p.JS.Stream(ctx, proto.MsgsStream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(16 << 20))
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	var out []Entry
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return out, err
		}
		md, err := m.Metadata()
		if err != nil {
			return out, err
		}
		e := Entry{Kind: proto.Kind(m.Headers().Get(proto.HdrKind)), Size: len(m.Data())}
		switch e.Kind {
		case proto.KindData:
			c, err := proto.ParseChunk(nats.Header(m.Headers()))
			if err != nil {
				return out, fmt.Errorf("seq %d: %w", md.Sequence.Stream, err)
			}
			e.Chunk = c
			sum := sha256.Sum256(m.Data())
			e.SHA = hex.EncodeToString(sum[:])
		case proto.KindOpen:
			e.Open = &proto.OpenEvent{}
			err = json.Unmarshal(m.Data(), e.Open)
		case proto.KindGap:
			e.Gap = &proto.GapEvent{}
			err = json.Unmarshal(m.Data(), e.Gap)
		case proto.KindClose:
			e.Close = &proto.CloseEvent{}
			err = json.Unmarshal(m.Data(), e.Close)
		}
		if err != nil {
			return out, fmt.Errorf("seq %d %s: %w", md.Sequence.Stream, e.Kind, err)
		}
		out = append(out, e)
		if md.Sequence.Stream >= last {
			return out, nil
		}
	}
}

// FilteredReasons reads the results stream and returns the reason of every
// connection summary replay ended as filtered.
func (p *Pipeline) FilteredReasons() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := p.JS.Stream(ctx, proto.ResultsStream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return nil, err
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	var out []string
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return out, err
		}
		var r struct {
			Kind    string `json:"kind"`
			Conn    string `json:"conn"`
			Reason  string `json:"reason"`
			Summary *struct {
				End string `json:"end"`
			} `json:"summary"`
		}
		if json.Unmarshal(m.Data(), &r) == nil && r.Summary != nil && r.Summary.End == "filtered" {
			out = append(out, r.Conn+": "+r.Reason)
		}
		md, err := m.Metadata()
		if err != nil || md.Sequence.Stream >= info.State.LastSeq {
			return out, err
		}
	}
}

// StreamFrames counts the frames in TAPLINE_FRAMES (every batch decap
// stored).
func (p *Pipeline) StreamFrames() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := p.JS.Stream(ctx, proto.FramesStream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return 0, err
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(16 << 20))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	n := 0
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return n, err
		}
		md, err := m.Metadata()
		if err != nil {
			return n, err
		}
		r := framebatch.NewReader(m.Data())
		var f framebatch.Frame
		for {
			err := r.Next(&f)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return n, fmt.Errorf("frames seq %d: %w", md.Sequence.Stream, err)
			}
			n++
		}
		if md.Sequence.Stream >= info.State.LastSeq {
			return n, nil
		}
	}
}

// ArchivePackets runs `archive query` over everything stored and counts the
// packets of the pcapng it writes.
func (p *Pipeline) ArchivePackets() (int, error) {
	out := filepath.Join(p.Dir, "query.pcapng")
	cmd := exec.Command(filepath.Join(binDir, "archive"), "query", "--store", p.Store,
		"--from", "0", "--to", "now", "--out", out)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("archive query: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return 0, err
	}
	r := framebatch.NewReader(b)
	n := 0
	var f framebatch.Frame
	for {
		err := r.Next(&f)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}
