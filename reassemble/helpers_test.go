package reassemble

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble/message"
)

// rawDecoder is a stand-in message decoder for the TCP tests: every Data
// call is one raw TCP message; a gap makes the next message incomplete.
type rawDecoder struct {
	meta    message.Meta
	out     message.Output
	seq     [2]uint64
	missing [2]int64
	stats   [2]message.Stats
	opened  bool
}

func newRawDecoder(meta message.Meta, out message.Output, _ message.Limits) message.Decoder {
	return &rawDecoder{meta: meta, out: out}
}

func (d *rawDecoder) open(ts int64) {
	if !d.opened {
		d.opened = true
		d.out.Open(&proto.OpenEvent{Protocol: "tcp", MidStream: d.meta.MidStream, FirstNs: ts})
	}
}

func (d *rawDecoder) Data(dir proto.Direction, b []byte, ts int64) {
	d.open(ts)
	i := dirIndex(dir)
	for len(b) > 0 {
		n := min(len(b), proto.MaxChunk)
		d.seq[i]++
		c := &proto.Chunk{Dir: dir, Seq: d.seq[i], Last: true, Opcode: proto.OpTCP, Complete: d.missing[i] == 0,
			Missing: d.missing[i], FirstNs: ts, LastNs: ts, Size: int64(n)}
		if c.Complete {
			d.stats[i].MessagesComplete++
		} else {
			d.stats[i].MessagesIncomplete++
		}
		d.missing[i] = 0
		d.out.Chunk(c, b[:n])
		b = b[n:]
	}
}

func (d *rawDecoder) Gap(dir proto.Direction, n int64, ts int64) {
	d.open(ts)
	d.missing[dirIndex(dir)] += n
}
func (d *rawDecoder) Close(int64)                             {}
func (d *rawDecoder) Stats(dir proto.Direction) message.Stats { return d.stats[dirIndex(dir)] }

// testStreams fit the test server's storage.
var testStreams = proto.StreamOptions{Replicas: 1,
	Frames: proto.StreamLimits{MaxBytes: 1 << 30}, Msgs: proto.StreamLimits{MaxBytes: 1 << 30},
	Results: proto.StreamLimits{MaxBytes: 64 << 20}, Events: proto.StreamLimits{MaxBytes: 64 << 20}}

// testConfig is a reassembler configuration for a test server.
func testConfig(url string, shards int, id string) Config {
	var c Config
	c.Common.NATSURL = url
	c.Common.Shards = shards
	c.Common.LogLevel, c.Common.LogFormat = "info", "text"
	c.Common.Streams = testStreams
	c.InstanceID = id
	c.MaxMemory = 1 << 30
	c.MaxConnections = 10000
	c.MaxBufferedBytes = 64 << 20
	c.ReorderWindow = 1 << 20
	c.IdleTimeout = 2 * time.Second
	c.MaxSeqJump = 1 << 30
	c.MaxFlowRate = 25e9 / 8
	c.MaxHeader = 64 << 10
	c.MaxMessage = 1 << 30
	c.MaxInflation = 200
	c.MaxInflight = 64
	c.MaxInflightBytes = 16 << 20
	c.MaxInflightConn = 16
	c.AckWait = 30 * time.Second
	c.MaxHeldBatches = 4096
	c.PinnedTTL = 5 * time.Second
	c.TakeoverSpread = 0
	c.Consumer = "reassemble"
	// TLS detection as the flags' defaults set it (on): every connection
	// passes the TLS layer first, as in production.
	d := flagDefaults()
	c.TLS, c.TLSHoldBytes, c.TLSHoldTime, c.TLSMaxKeys, c.TLSKeyMaxAge = d.TLS, d.TLSHoldBytes, d.TLSHoldTime, d.TLSMaxKeys, d.TLSKeyMaxAge
	c.NewDecoder = newRawDecoder
	return c
}

// flagDefaults is the Config the command line gives when no flag is set.
var flagDefaults = sync.OnceValue(func() Config {
	var c Config
	c.Register(flag.NewFlagSet("defaults", flag.ContinueOnError))
	return c
})

// startEngine runs Run in the background; the returned cancel stops it and
// waits for Run to return.
func startEngine(t *testing.T, cfg Config) (cancel func()) {
	t.Helper()
	cancel, _ = startEngineReg(t, cfg)
	return cancel
}

// startEngineReg is startEngine that also returns the metrics registry.
func startEngineReg(t *testing.T, cfg Config) (cancel func(), reg *prometheus.Registry) {
	t.Helper()
	d, reg := stage.TestDeps("reassemble")
	if os.Getenv("TAPLINE_TEST_LOG") != "" { // debugging: the engine's info logs
		d.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("instance", cfg.InstanceID)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, d) }()
	var once sync.Once
	cancel = func() {
		once.Do(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(cancel)
	return cancel, reg
}

// metricValue sums the series of a metric whose labels include want.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	var labels []string
	for k, v := range want {
		labels = append(labels, k, v)
	}
	sum, err := stage.MetricSum(reg, name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// connect returns a JetStream client with the streams provisioned.
func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, testStreams, proto.FramesStream, proto.MsgsStream, proto.EventsStream); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// batcher groups frames per subject into batches of at most n frames and
// publishes them.
type batcher struct {
	t      testing.TB
	js     jetstream.JetStream
	n      int
	w      map[string]*framebatch.Writer
	order  []string
	frames int
}

func newBatcher(t testing.TB, js jetstream.JetStream, n int) *batcher {
	return &batcher{t: t, js: js, n: n, w: map[string]*framebatch.Writer{}}
}

func (b *batcher) add(f *framebatch.Frame, shard int) {
	subj := proto.FramesSubject(f.VNI, shard)
	w := b.w[subj]
	if w == nil {
		w = &framebatch.Writer{}
		b.w[subj] = w
		b.order = append(b.order, subj)
	}
	w.Add(f)
	b.frames++
	if w.Frames() >= b.n {
		b.send(subj)
	}
}

func (b *batcher) send(subj string) {
	w := b.w[subj]
	if w.Frames() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.js.Publish(ctx, subj, append([]byte(nil), w.Bytes()...)); err != nil {
		b.t.Fatal(err)
	}
	w.Reset()
}

func (b *batcher) flush() {
	for _, s := range b.order {
		b.send(s)
	}
}

// publishCapture publishes a capture file as decap would, n frames per
// batch at most.
func publishCapture(t testing.TB, js jetstream.JetStream, path string, shards, n int) int {
	b := newBatcher(t, js, n)
	if err := decap.ReadCaptureShards(path, shards, func(f *framebatch.Frame, shard int) error {
		b.add(f, shard)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b.flush()
	return b.frames
}

// connOut is what the messages stream holds for one connection.
type connOut struct {
	id             string
	client, server string
	open           *proto.OpenEvent
	closeEv        *proto.CloseEvent
	gaps           []proto.GapEvent
	bytes          map[proto.Direction]int64
	body           map[proto.Direction][]byte
	chunks         map[string]int // msg id -> count
	msgs           map[proto.Direction][]*gotMsg
	incomplete     int
	entries        int
	// reordered counts data chunks stored after a later chunk of their
	// direction (stream order is not Tapline-Seq/Tapline-Chunk order).
	reordered int
	last      map[proto.Direction][2]uint64 // highest (seq, chunk) stored
}

// gotMsg is one message assembled from its chunks.
type gotMsg struct {
	seq        uint64
	opcode     string
	body       []byte
	last       bool
	complete   bool
	compressed bool
	closeCode  int
}

// collector reads TAPLINE_MSGS with an ordered consumer.
type collector struct {
	mu    sync.Mutex
	conns map[string]*connOut
	order []string
	errs  []error
	total int
}

func collect(t *testing.T, js jetstream.JetStream) *collector {
	t.Helper()
	col := &collector{conns: map[string]*connOut{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, proto.MsgsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { col.add(m) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return col
}

func (col *collector) add(m jetstream.Msg) {
	col.mu.Lock()
	defer col.mu.Unlock()
	col.total++
	h := m.Headers()
	id := h.Get(proto.HdrConn)
	c := col.conns[id]
	if c == nil {
		c = &connOut{id: id, bytes: map[proto.Direction]int64{}, body: map[proto.Direction][]byte{}, chunks: map[string]int{}, msgs: map[proto.Direction][]*gotMsg{}}
		col.conns[id] = c
		col.order = append(col.order, id)
	}
	c.entries++
	switch proto.Kind(h.Get(proto.HdrKind)) {
	case proto.KindData:
		ch, err := proto.ParseChunk(nats.Header(h))
		if err != nil {
			col.errs = append(col.errs, err)
			return
		}
		c.client, c.server = ch.Client, ch.Server
		c.bytes[ch.Dir] += int64(len(m.Data()))
		c.body[ch.Dir] = append(c.body[ch.Dir], m.Data()...)
		c.chunks[ch.MsgID()]++
		if c.last == nil {
			c.last = map[proto.Direction][2]uint64{}
		}
		if l, at := c.last[ch.Dir], [2]uint64{ch.Seq, uint64(ch.Index)}; at[0] < l[0] || (at[0] == l[0] && at[1] < l[1]) {
			c.reordered++
		} else {
			c.last[ch.Dir] = at
		}
		if c.chunks[ch.MsgID()] == 1 {
			ms := c.msgs[ch.Dir]
			if len(ms) == 0 || ms[len(ms)-1].seq != ch.Seq {
				ms = append(ms, &gotMsg{seq: ch.Seq, opcode: ch.Opcode})
				c.msgs[ch.Dir] = ms
			}
			g := ms[len(ms)-1]
			g.body = append(g.body, m.Data()...)
			g.last, g.complete, g.closeCode, g.compressed = ch.Last, ch.Complete, ch.CloseCode, ch.Compressed
		}
		if ch.Last && !ch.Complete {
			c.incomplete++
		}
	case proto.KindOpen:
		c.open = &proto.OpenEvent{}
		col.decode(m, c.open)
	case proto.KindGap:
		var g proto.GapEvent
		col.decode(m, &g)
		c.gaps = append(c.gaps, g)
	case proto.KindClose:
		c.closeEv = &proto.CloseEvent{}
		col.decode(m, c.closeEv)
	default:
		col.errs = append(col.errs, fmt.Errorf("unknown kind %q", h.Get(proto.HdrKind)))
	}
}

func (col *collector) decode(m jetstream.Msg, v any) {
	if err := jsonUnmarshal(m.Data(), v); err != nil {
		col.errs = append(col.errs, err)
	}
}

// closed returns the connections with a close event, sorted by id.
func (col *collector) closed() []*connOut {
	col.mu.Lock()
	defer col.mu.Unlock()
	var out []*connOut
	for _, id := range col.order {
		if c := col.conns[id]; c.closeEv != nil {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// closed2 is closed for a caller holding col.mu.
func (col *collector) closed2() []*connOut {
	var out []*connOut
	for _, id := range col.order {
		if c := col.conns[id]; c.closeEv != nil {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// labDeps are stage dependencies for a second stage in a test.
func labDeps() (stage.Deps, any) {
	d, reg := stage.TestDeps("decap")
	return d, reg
}

// waitFor polls cond for up to 60 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var errStop = errors.New("stop")
