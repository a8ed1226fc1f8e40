package replay

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/replay/replaytest"
)

// env is one test's JetStream server, a client, and the results seen.
type env struct {
	t   testing.TB
	url string
	nc  *nats.Conn
	js  jetstream.JetStream
	pub replaytest.Publisher

	mu      sync.Mutex
	results []resultMsg
}

type resultMsg struct {
	h    nats.Header
	body Result
}

func newEnv(t testing.TB) *env {
	t.Helper()
	_, url := natstest.Run(t)
	return newEnvURL(t, url)
}

// newEnvURL is newEnv on an existing server.
func newEnvURL(t testing.TB, url string) *env {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.MsgsStream, proto.ResultsStream); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, url: url, nc: nc, js: js, pub: replaytest.Publisher{JS: js}}
	if _, err := nc.Subscribe(proto.ResultsPrefix+".>", func(m *nats.Msg) {
		var r Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("result body: %v", err)
		}
		e.mu.Lock()
		e.results = append(e.results, resultMsg{h: m.Header, body: r})
		e.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// publish publishes entries and waits for their acknowledgements.
func (e *env) publish(msgs ...*nats.Msg) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.pub.Publish(ctx, msgs...); err != nil {
		e.t.Fatal(err)
	}
}

// publishMsg publishes every chunk of m.
func (e *env) publishMsg(m *replaytest.Message) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := e.pub.PublishMessage(ctx, m); err != nil {
		e.t.Fatal(err)
	}
	if err := e.pub.Wait(ctx); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) Results() []resultMsg {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]resultMsg(nil), e.results...)
}

// waitResults polls until cond holds over the results.
func (e *env) waitResults(timeout time.Duration, what string, cond func([]resultMsg) bool) []resultMsg {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rs := e.Results()
		if cond(rs) {
			return rs
		}
		if time.Now().After(deadline) {
			for _, r := range rs {
				e.t.Logf("result: %+v", r.body)
			}
			e.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countResults(rs []resultMsg, kind, result string) int {
	n := 0
	for _, r := range rs {
		if r.body.Kind == kind && r.body.Result == result {
			n++
		}
	}
	return n
}

// replayer is a running replay engine.
type replayer struct {
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

// startReplay parses args exactly as the command line would and runs the
// engine until the test ends.
func (e *env) startReplay(mod func(*Config), args ...string) *replayer {
	e.t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	cfg.Register(fs)
	all := append([]string{"--nats-url", e.url, "--http", "", "--pace", "fast"}, args...)
	if err := fs.Parse(all); err != nil {
		e.t.Fatal(err)
	}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Common.Validate(); err != nil {
		e.t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		e.t.Fatal(err)
	}
	d, reg := stage.TestDeps("replay")
	ctx, cancel := context.WithCancel(context.Background())
	r := &replayer{cancel: cancel, done: make(chan error, 1), reg: reg}
	go func() { r.done <- Run(ctx, cfg, d) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

func (r *replayer) stop(t testing.TB) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("Run did not stop within 60s")
	}
}

// counter reads a counter of the replay registry.
func (r *replayer) counter(name string, labels ...string) float64 {
	total, _ := stage.MetricSum(r.reg, name, labels...)
	return total
}

// conv builds one generated connection: an open event, messages, a close.
type conv struct {
	id     string
	vni    uint32
	shard  int
	client string
	server string
	path   string
	msgs   []*replaytest.Message
}

func newConv(i int, path string) *conv {
	return &conv{
		id: fmt.Sprintf("conn-%03d", i), vni: 42, shard: i % 4,
		client: fmt.Sprintf("10.0.0.%d:%d", 1+i%200, 40000+i), server: "10.1.0.1:443", path: path,
	}
}

func (c *conv) open(protocol string) *nats.Msg {
	return replaytest.Open(c.shard, proto.OpenEvent{Conn: c.id, VNI: c.vni, Client: c.client, Server: c.server,
		Protocol: protocol, Path: c.path, Host: "prod.example", FirstNs: 1})
}

func (c *conv) close() *nats.Msg {
	return replaytest.Close(c.vni, c.shard, proto.CloseEvent{Conn: c.id, Reason: "fin", AtNs: 2})
}

// add appends a message of dir with the next sequence number.
func (c *conv) add(dir proto.Direction, opcode string, payload []byte) *replaytest.Message {
	seq := uint64(1)
	for _, m := range c.msgs {
		if m.Dir == dir {
			seq++
		}
	}
	m := &replaytest.Message{Conn: c.id, VNI: c.vni, Shard: c.shard, Client: c.client, Server: c.server,
		Dir: dir, Seq: seq, Opcode: opcode, Payload: payload, FirstNs: int64(seq) * 1000, LastNs: int64(seq)*1000 + 10}
	c.msgs = append(c.msgs, m)
	return m
}

// entries returns the connection's entries in order.
func (c *conv) entries(protocol string) []*nats.Msg {
	out := []*nats.Msg{c.open(protocol)}
	for _, m := range c.msgs {
		for ch := range m.Chunks() {
			out = append(out, ch)
		}
	}
	return append(out, c.close())
}

func digest(p []byte) [32]byte { return sha256.Sum256(p) }

func short(d [32]byte) string { return fmt.Sprintf("%x", d[:4]) }

type hasher struct {
	h interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
}

func newHasher() *hasher         { return &hasher{h: sha256.New()} }
func (h *hasher) Write(p []byte) { h.h.Write(p) }
func (h *hasher) sum() (out [32]byte) {
	copy(out[:], h.h.Sum(nil))
	return out
}

func openEvent(path, subprotocol string, headers map[string]string) *proto.OpenEvent {
	return &proto.OpenEvent{Conn: "c", Protocol: "websocket", Path: path, Subprotocol: subprotocol, Headers: headers}
}
