// Package demo is `tapline demo`: the whole Tapline flow on bundled
// captures, within a minute, on loopback only. It runs the all-in-one (an
// embedded JetStream server and every stage), sends the captures through
// `decap send` as AWS-style VXLAN to the all-in-one's own UDP port,
// replays the mirrored client messages into the built-in test system,
// prints what the test system received and what the mirror lost (the loss
// summaries of the close events), then queries the archive into a pcapng
// file and shows it with tshark when tshark is installed.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/allinone"
	"github.com/tapline/tapline/allinone/testsystem"
	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/decap/send"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
)

// DefaultCaptures are the bundled captures the demo sends: a WebSocket
// JSON conversation, and one compressed with permessage-deflate and
// context takeover.
var DefaultCaptures = []string{"ws-broker-json.pcap", "ws-pmd-server-context-takeover.pcap"}

// Options configure a demo run.
type Options struct {
	// Captures to send: paths, or names under testdata/captures.
	Captures []string
	// VNI the captures are sent with.
	VNI int
	// Dir keeps the NATS store, archive and query output (empty: a
	// temporary directory, removed at the end unless Keep).
	Dir  string
	Keep bool
	// Timeout bounds the wait for the pipeline to deliver everything.
	Timeout time.Duration
	// Quiet is how long nothing new must happen, once every connection is
	// closed and every client message has a replay result, before the
	// demo considers the flow finished.
	Quiet time.Duration
	// Stall ends the wait early when nothing at all happened for this
	// long (default 3 × Quiet).
	Stall time.Duration
	// LogLevel of the stages' logs (on stderr).
	LogLevel string
	// Out receives the narrative; nil: os.Stdout.
	Out io.Writer
}

// Report is what a demo run observed.
type Report struct {
	Sent        send.Result
	Opens       []proto.OpenEvent
	Closes      []proto.CloseEvent
	Gaps        int
	Messages    map[proto.Direction]int // data messages (text, binary, tcp) seen on tapline.msgs.>, by direction
	Controls    map[string]int          // control frames (close, ping, pong) seen there, by opcode
	Incomplete  int                     // of the data messages, not complete
	Results     map[string]int          // replay results of data messages by Tapline-Result
	ConnResults map[string]int          // replay's connection summaries by Tapline-Result
	Received    []testsystem.Message    // what the test system received
	TestConns   int                     // connections the test system accepted
	PcapPath    string                  // archive query output
	Query       query.Result
	TShark      string // tshark -r output (empty without tshark)
	// Metrics are the names of the tapline_* metric families the
	// all-in-one exported by the end of the run.
	Metrics []string
}

// EnvPrefix starts the environment variables of `tapline demo`'s flags
// (TAPLINE_DEMO_DIR, TAPLINE_DEMO_VNI …); until this release they were
// TAPLINE_DIR, TAPLINE_VNI …, shared with replay's and decap's flags.
const EnvPrefix = "TAPLINE_DEMO_"

// Main is `tapline demo`.
func Main(args []string) int {
	var o Options
	var captures stage.ListFlag
	fs := flag.NewFlagSet("tapline demo", flag.ContinueOnError)
	fs.Var(&captures, "capture", "capture to send (repeatable; default "+strings.Join(DefaultCaptures, ", ")+" from testdata/captures)")
	fs.IntVar(&o.VNI, "vni", 42, "VNI the captures are sent with")
	fs.StringVar(&o.Dir, "dir", "", "directory for the NATS store, the archive and the query output (default: a temporary one)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temporary directory")
	fs.DurationVar(&o.Timeout, "timeout", 60*time.Second, "longest wait for the pipeline to deliver")
	fs.StringVar(&o.LogLevel, "log-level", "error", "log level of the stages (on stderr)")
	// TAPLINE_DEMO_DIR, not TAPLINE_DIR: that is replay's --dir.
	stage.SetEnvPrefix(fs, EnvPrefix)
	if err := stage.Parse(fs, args, nil); err != nil {
		if errors.Is(err, stage.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "tapline demo: %v\n", err)
		return 2
	}
	o.Captures = captures
	ctx, stop := stage.SignalContext()
	defer stop()
	if _, err := Run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "tapline demo: %v\n", err)
		return 1
	}
	return 0
}

// FindCapture resolves a capture name: an existing path, or a file of that
// name under testdata/captures in the working directory or one of its
// parents.
func FindCapture(name string) (string, error) {
	if _, err := os.Stat(name); err == nil {
		return name, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 8 {
		p := filepath.Join(dir, "testdata", "captures", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("capture %q not found (run from the repository, or give a path with --capture)", name)
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// prefixWriter prefixes every line written through it.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			if _, err := io.WriteString(p.w, p.prefix+line); err != nil {
				return 0, err
			}
		}
	}
	return len(b), nil
}

// observer follows the messages and results subjects.
type observer struct {
	mu      sync.Mutex
	rep     *Report
	changed time.Time
}

func (ob *observer) touch() { ob.changed = time.Now() }

func (ob *observer) onMsg(m *nats.Msg) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	ob.touch()
	switch proto.Kind(m.Header.Get(proto.HdrKind)) {
	case proto.KindOpen:
		var e proto.OpenEvent
		if json.Unmarshal(m.Data, &e) == nil {
			ob.rep.Opens = append(ob.rep.Opens, e)
		}
	case proto.KindClose:
		var e proto.CloseEvent
		if json.Unmarshal(m.Data, &e) == nil {
			ob.rep.Closes = append(ob.rep.Closes, e)
		}
	case proto.KindGap:
		ob.rep.Gaps++
	case proto.KindData:
		c, err := proto.ParseChunk(m.Header)
		if err != nil || !c.Last {
			return
		}
		if !isData(c.Opcode) {
			ob.rep.Controls[c.Opcode]++ // a close frame is no message
			return
		}
		ob.rep.Messages[c.Dir]++
		if !c.Complete {
			ob.rep.Incomplete++
		}
	}
}

// isData reports the opcodes of messages (not control frames).
func isData(op string) bool { return proto.DataOpcode(op) }

func (ob *observer) onResult(m *nats.Msg) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	ob.touch()
	var r struct {
		Kind   string `json:"kind"`
		Opcode string `json:"opcode"`
	}
	_ = json.Unmarshal(m.Data, &r)
	switch {
	case m.Header.Get(proto.HdrKind) == "summary":
		ob.rep.ConnResults[m.Header.Get(proto.HdrResult)]++
	case isData(r.Opcode):
		// Only messages: "sent N" then counts what the test system can
		// have received, not close frames or connection summaries.
		ob.rep.Results[m.Header.Get(proto.HdrResult)]++
	}
}

// Run runs the demo and returns what it observed.
func Run(ctx context.Context, o Options) (*Report, error) {
	out := o.Out
	if out == nil {
		out = os.Stdout
	}
	if len(o.Captures) == 0 {
		o.Captures = DefaultCaptures
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Quiet == 0 {
		o.Quiet = 2 * time.Second
	}
	if o.Stall == 0 {
		o.Stall = 3 * o.Quiet
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	var paths []string
	for _, c := range o.Captures {
		p, err := FindCapture(c)
		if err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "tapline-demo-*")
		if err != nil {
			return nil, err
		}
		dir = d
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	}
	rep := &Report{Messages: map[proto.Direction]int{}, Controls: map[string]int{}, Results: map[string]int{}, ConnResults: map[string]int{}}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	// The test system.
	ts, err := testsystem.Start("127.0.0.1:0", &prefixWriter{w: out, prefix: "    │ "})
	if err != nil {
		return nil, fmt.Errorf("test system: %w", err)
	}
	defer ts.Close()

	// The all-in-one, on free loopback ports.
	port, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	cfg := allinone.NewConfig()
	fs := flag.NewFlagSet("tapline", flag.ContinueOnError)
	cfg.Register(fs)
	settings := []struct{ name, value string }{
		{"nats-listen", "127.0.0.1:0"},
		{"nats-store", filepath.Join(dir, "nats")},
		{"http", "127.0.0.1:0"},
		{"log-level", o.LogLevel},
		{"decap.listen-addr", "127.0.0.1"},
		{"decap.vxlan-port", strconv.Itoa(port)},
		{"decap.geneve-port", "0"},
		// The captures end without FIN on some connections: close them
		// after 3 s of silence so their loss summaries are published.
		{"reassemble.idle-timeout", "3s"},
		{"replay.target", ts.URL()},
		{"replay.pace", "fast"},
		{"replay.compare", "false"},
		{"archive.store", filepath.Join(dir, "archive-data")},
	}
	for _, s := range settings {
		stageName, _, prefixed := strings.Cut(s.name, ".")
		if prefixed && cfg.Stage(stageName) == nil {
			continue
		}
		if err := fs.Set(s.name, s.value); err != nil {
			return nil, fmt.Errorf("set --%s: %v", s.name, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	missing := []string{}
	for _, n := range []string{"decap", "reassemble", "replay", "archive"} {
		if cfg.Stage(n) == nil {
			missing = append(missing, n)
		}
	}
	if cfg.Stage("decap") == nil {
		return nil, errors.New("this build has no decap stage")
	}

	say("▶ Tapline demo — everything on 127.0.0.1, working directory %s", dir)
	say("  1. starting the all-in-one: embedded JetStream + %s", strings.Join(allinone.Available(), ", "))
	if len(missing) > 0 {
		say("     (not in this build yet: %s)", strings.Join(missing, ", "))
	}
	say("     decap listens for VXLAN on udp://127.0.0.1:%d; the test system is %s", port, ts.URL())

	reg := stage.NewRegistry()
	d := stage.Deps{Log: cfg.Logger(), Metrics: reg, Health: &stage.Health{}}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	urlc := make(chan string, 1)
	runErr := make(chan error, 1)
	go func() { runErr <- allinone.Run(runCtx, cfg, d, func(u string) { urlc <- u }) }()
	var url string
	select {
	case url = <-urlc:
	case err := <-runErr:
		return nil, fmt.Errorf("all-in-one: %v", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := waitHealthy(ctx, d.Health, 30*time.Second); err != nil {
		return nil, err
	}
	if err := waitListening(ctx, reg, 30*time.Second); err != nil {
		return nil, err
	}

	ob := &observer{rep: rep}
	ob.touch()
	nc, err := nats.Connect(url, nats.Name("tapline-demo"), nats.MaxReconnects(0))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if _, err := nc.Subscribe(proto.MsgsPrefix+".>", ob.onMsg); err != nil {
		return nil, err
	}
	if _, err := nc.Subscribe(proto.ResultsPrefix+".>", ob.onResult); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}

	// decap send: the captures as AWS would mirror them.
	say("  2. decap send: the captures as AWS would mirror them, to 127.0.0.1:%d with VNI %d", port, o.VNI)
	for _, p := range paths {
		say("     decap send %s --to 127.0.0.1:%d --vni %d", filepath.Base(p), port, o.VNI)
		res, err := send.Send(ctx, send.Config{File: p, To: fmt.Sprintf("127.0.0.1:%d", port), VNI: o.VNI, Top: true, Loop: 1},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return nil, fmt.Errorf("decap send %s: %v", p, err)
		}
		say("       %d VXLAN datagrams, %d bytes of inner frames", res.Packets, res.Bytes)
		rep.Sent.Packets += res.Packets
		rep.Sent.Bytes += res.Bytes
		rep.Sent.Skipped += res.Skipped
	}
	say("  3. reassemble → replay → test system:")

	// Wait until the flow is quiet (or every connection closed and every
	// client message has a result).
	deadline := time.Now().Add(o.Timeout)
	for {
		ob.mu.Lock()
		quiet := time.Since(ob.changed) > o.Quiet
		stalled := time.Since(ob.changed) > o.Stall
		c2s := rep.Messages[proto.ClientToServer]
		results := 0
		for _, n := range rep.Results {
			results += n
		}
		allDone := len(rep.Opens) > 0 && len(rep.Closes) >= len(rep.Opens) && results >= c2s
		ob.mu.Unlock()
		if allDone && quiet || stalled || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Stop: every stage drains (reassemble closes what is open, archive
	// stores its open chunks), then the embedded server stops.
	say("  4. stopping the all-in-one (every stage drains)")
	stopRun()
	if err := <-runErr; err != nil {
		return nil, fmt.Errorf("all-in-one: %v", err)
	}
	rep.Received, rep.TestConns = ts.Messages(), ts.Conns()
	if mfs, err := reg.Gather(); err == nil {
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), "tapline_") {
				rep.Metrics = append(rep.Metrics, mf.GetName())
			}
		}
	}
	printSummary(out, rep)

	// The archive.
	if cfg.Stage("archive") != nil {
		if err := queryArchive(ctx, out, filepath.Join(dir, "archive-data"), filepath.Join(dir, "demo.pcapng"), rep); err != nil {
			return rep, err
		}
	}
	if o.Keep || o.Dir != "" {
		say("\nkept: %s", dir)
	}
	return rep, nil
}

func waitHealthy(ctx context.Context, h *stage.Health, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		failed := h.Check()
		if len(failed) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pipeline not healthy after %s: %v", limit, failed)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitListening waits until decap's UDP sockets are open (its
// tapline_decap_udp_sockets gauge is above 0): datagrams sent before are
// lost, as they would be in production.
func waitListening(ctx context.Context, g prometheus.Gatherer, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		mfs, err := g.Gather()
		if err != nil {
			return err
		}
		for _, mf := range mfs {
			if mf.GetName() == "tapline_decap_udp_sockets" {
				for _, m := range mf.GetMetric() {
					if m.GetGauge().GetValue() > 0 {
						return nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("decap not listening after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func printSummary(out io.Writer, rep *Report) {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("\n▶ What the test system received")
	conns := map[int]bool{}
	bytes := 0
	for _, m := range rep.Received {
		conns[m.Conn] = true
		bytes += m.Size
	}
	say("  %d messages (%d bytes) on %d connections (%d of them carried messages)", len(rep.Received), bytes, max(rep.TestConns, len(conns)), len(conns))
	if s := counts(rep.Results); s != "" {
		say("  replay, client messages: %s", s)
	}
	if s := counts(rep.ConnResults); s != "" {
		say("  replay, connections: %s", s)
	}
	controls := ""
	if s := counts(rep.Controls); s != "" {
		controls = " (and control frames: " + s + ")"
	}
	say("  reassembled: %d client→server and %d server→client messages%s, %d incomplete, %d gap events",
		rep.Messages[proto.ClientToServer], rep.Messages[proto.ServerToClient], controls, rep.Incomplete, rep.Gaps)

	say("\n▶ What the mirror lost (loss summary of each connection's close event)")
	opens := map[string]proto.OpenEvent{}
	for _, e := range rep.Opens {
		opens[e.Conn] = e
	}
	closed := map[string]bool{}
	for _, c := range rep.Closes {
		closed[c.Conn] = true
	}
	for _, o := range rep.Opens {
		if !closed[o.Conn] {
			say("  %s → %s %s %s: still open, no loss summary yet", o.Client, o.Server, o.Protocol, o.Path)
		}
	}
	for _, c := range rep.Closes {
		o := opens[c.Conn]
		what := o.Protocol
		if o.Path != "" {
			what += " " + o.Path
		}
		if o.MidStream {
			what += " (joined mid-stream)"
		}
		say("  %s → %s %s, %s", o.Client, o.Server, what, closeReason(c.Reason))
		for _, d := range []struct {
			name string
			l    proto.DirLoss
		}{{"c2s", c.C2S}, {"s2c", c.S2C}} {
			say("    %s: %d of %d bytes seen, %d missing in %d gaps; messages %d complete, %d incomplete",
				d.name, d.l.BytesSeen, d.l.BytesImplied, d.l.BytesMissing, d.l.Gaps, d.l.MessagesComplete, d.l.MessagesIncomplete)
		}
	}
}

func queryArchive(ctx context.Context, out io.Writer, location, pcap string, rep *Report) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("\n▶ The archive: archive query --store %s > %s", location, pcap)
	st, err := store.Open(ctx, location, store.S3Options{})
	if err != nil {
		return fmt.Errorf("archive: %v", err)
	}
	chunks, errs := query.List(ctx, st, query.Filter{})
	for _, e := range errs {
		say("  unreadable: %v", e)
	}
	f, err := os.Create(pcap)
	if err != nil {
		return err
	}
	res, err := query.Write(ctx, st, chunks, query.Filter{}, f, nil)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("archive query: %v", err)
	}
	rep.PcapPath, rep.Query = pcap, res
	say("  %d chunks, %d packets written (%d sent by decap send)", res.Chunks, res.Packets, rep.Sent.Packets)
	if _, err := exec.LookPath("tshark"); err != nil {
		say("  (install tshark to see the packets: tshark -r %s)", pcap)
		return nil
	}
	cmd := exec.CommandContext(ctx, "tshark", "-r", pcap)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		say("  tshark -r failed: %v\n%s", err, stderr.String())
		return fmt.Errorf("tshark cannot read the archive query output: %v", err)
	}
	rep.TShark = string(b)
	lines := strings.Split(strings.TrimRight(rep.TShark, "\n"), "\n")
	say("  tshark -r %s (%d packets):", filepath.Base(pcap), len(lines))
	const head, tail = 15, 5
	for i, l := range lines {
		switch {
		case len(lines) <= head+tail+1 || i < head || i >= len(lines)-tail:
			say("    %s", l)
		case i == head:
			say("    … %d more", len(lines)-head-tail)
		}
	}
	return nil
}

// counts writes a count map as "k1 n1, k2 n2", sorted.
func counts(m map[string]int) string {
	var out []string
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// closeReason says in words how a connection ended (the close event's
// reason).
func closeReason(r string) string {
	switch r {
	case "fin":
		return "closed normally (FIN)"
	case "rst":
		return "reset (RST)"
	case "idle":
		return "ended by the idle timeout (no FIN or RST was captured; --reassemble.idle-timeout)"
	case "shutdown":
		return "still open when the pipeline stopped"
	}
	return "closed: " + r
}
