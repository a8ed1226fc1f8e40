package decap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/decap/capture"
	"github.com/tapline/tapline/decap/decode"
	"github.com/tapline/tapline/decap/publish"
	"github.com/tapline/tapline/decap/shard"
	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
)

// engine is one running decap: decoders feeding the sharder and batcher,
// the batcher feeding the publisher.
type engine struct {
	cfg     Config
	d       stage.Deps
	stats   *decode.Stats
	sharder *shard.Sharder
	batcher *batch.Batcher
	pub     *publish.Publisher
	nc      *nats.Conn
	workers sync.Pool // *worker, for the network intake

	dropsMu   sync.Mutex
	lastDrops uint64
	intake    atomic.Pointer[udpin.Intake]
	listening *atomic.Bool // the intake is open (the "intake" health check)
	refused   refusedLog
	instance  string // in the drop reports
}

// Run is the decap engine. It connects to NATS, provisions TAPLINE_FRAMES
// and TAPLINE_EVENTS, then either reads cfg.Read (a pcap/pcapng file) as
// fast as JetStream takes it, drains and returns nil, or receives VXLAN and
// GENEVE datagrams (from cfg.Intake, or sockets it opens) until ctx ends,
// drains for up to --drain-timeout and returns nil. Metrics go to
// d.Metrics, the "nats" health check to d.Health.
//
// To publish a capture file into a JetStream server in code:
//
//	cfg := decap.DefaultConfig()
//	cfg.Common.NATSURL = url
//	cfg.Read = "capture.pcap"
//	err := decap.Run(ctx, cfg, d) // d from stage.TestDeps("decap")
func Run(ctx context.Context, cfg Config, d stage.Deps) error {
	// Every check /healthz needs, failing until registered (live, the
	// "intake" check comes first and keeps it unhealthy too).
	d.Health.Expect("nats", "streams")
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Read == "" {
		switch {
		case cfg.AllowAnySource:
			d.Log.Warn("outer source allow list off (--allow-any-source): any host that reaches the ports can inject traffic; restrict the ports with a security group")
		case len(cfg.prefixes) > 0:
			d.Log.Info("outer source allow list on: datagrams from other sources are dropped and counted", "allow_src", cfg.AllowSrc.String())
		default:
			d.Log.Info("outer source allow list: private and loopback sources only (default); set --allow-src to choose", "allow_src", DefaultAllowSrcString())
		}
	}
	d.Log.Info("VNIs tracked at most", "max_vnis", cfg.MaxVNIs)
	if len(cfg.vnis) > 0 {
		d.Log.Info("VNI allow list on", "vni", cfg.VNI.String())
	}
	// Live, decap is healthy only once its mirror ports are open, and it
	// opens them only once its streams accept publishes: an NLB sends
	// mirror traffic to it only when it can store it.
	listening := &atomic.Bool{}
	if cfg.Read == "" {
		d.Health.Add("intake", func() error {
			if !listening.Load() {
				return errors.New("mirror ports not open yet: waiting for the streams")
			}
			return nil
		})
	}
	var file *os.File
	if cfg.Read != "" {
		var err error
		if file, err = os.Open(cfg.Read); err != nil {
			return stage.ConfigError(fmt.Errorf("--read: %w", err))
		}
		defer file.Close()
	}

	nc, js, err := cfg.Common.Connect(ctx, "tapline-decap", d.Log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := ensureStreams(ctx, js, cfg, d); err != nil {
		return err
	}

	// A batch must fit the server's max payload and the stream's max
	// message size; batches end at --batch-bytes (or hold one frame of up
	// to 64 KiB), plus block overhead.
	if limit := min(int(nc.MaxPayload()), proto.MaxChunk+64<<10) - 1024; cfg.BatchBytes > limit && limit > 0 {
		d.Log.Warn("--batch-bytes lowered to fit the NATS max payload and the stream's max message size", "batch_bytes", cfg.BatchBytes, "effective", limit)
		cfg.BatchBytes = limit
	}
	e := &engine{cfg: cfg, d: d, stats: decode.NewStats(), sharder: shard.New(cfg.Common.Shards, cfg.FragTable), nc: nc, listening: listening, instance: stage.NewInstanceID()}
	e.refused.log = d.Log
	if err := d.Metrics.Register(e.stats); err != nil {
		return err
	}
	early := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tapline_decap_fragments_early_total", Help: "Non-first IP fragments seen before their first fragment (sharded by the port-less hash)."}, func() float64 { return float64(e.sharder.Early.Load()) })
	frags := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tapline_decap_fragments_total", Help: "Inner IP fragments seen."}, func() float64 { return float64(e.sharder.Fragments.Load()) })
	if err := registerAll(d.Metrics, early, frags); err != nil {
		return err
	}
	block := cfg.Read != ""
	e.batcher = batch.New(batch.Config{MaxBytes: cfg.BatchBytes, Delay: cfg.BatchDelay}, func(b *batch.Batch) {
		e.pub.Submit(b, block)
	})
	reprovision := func() { e.reprovision(js) }
	e.pub, err = publish.New(nc, publish.Config{MaxInflight: cfg.MaxInflight, MaxInflightShardBytes: cfg.MaxInflightShardBytes, BufferBytes: cfg.publishBuffer(), AckTimeout: cfg.AckTimeout, NoStream: reprovision}, d.Metrics, d.Log, e.batcher.Release)
	if err != nil {
		return err
	}
	d.Health.Add("nats", e.pub.Healthy)
	e.pub.Start()
	// Reading a file, the publisher makes the reader wait for room; on
	// shutdown it must not wait any longer.
	stopBlocking := context.AfterFunc(ctx, e.pub.StopBlocking)
	defer stopBlocking()

	bctx, stopBatcher := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); e.batcher.Run(bctx) }()
	go func() { defer bg.Done(); e.reportDrops(bctx) }()

	var runErr error
	if file != nil {
		runErr = e.readFile(ctx, file)
	} else {
		runErr = e.listen(ctx)
	}

	// Drain: hand on every pending batch, publish what is buffered. A file
	// is published completely unless ctx ends; then, as for live traffic,
	// publishing goes on for at most --drain-timeout.
	e.batcher.Flush()
	dctx, cancel := context.WithCancel(context.Background())
	if file == nil || ctx.Err() != nil {
		time.AfterFunc(cfg.DrainTimeout, cancel)
	} else {
		stop := context.AfterFunc(ctx, func() { time.AfterFunc(cfg.DrainTimeout, cancel) })
		defer stop()
	}
	derr := e.pub.Drain(dctx)
	cancel()
	stopBatcher()
	bg.Wait()
	e.publishDrops(true)
	t := e.stats.Totals()
	d.Log.Info("decap done", "packets", t.Packets, "bytes", t.Bytes, "truncated", t.Truncated, "bad_checksum", t.BadChecksum,
		"reserved_bits", t.Reserved, "malformed", t.Malformed, "inner_malformed", t.InnerMalformed, "filtered", t.Filtered)
	if derr != nil {
		d.Log.Warn("drain incomplete", "err", derr)
	}
	nc.Flush()
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	return nil
}

func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// ensureStreams provisions the streams (stage.ProvisionStreams): until
// they accept publishes /healthz fails and the mirror ports stay closed.
func ensureStreams(ctx context.Context, js jetstream.JetStream, cfg Config, d stage.Deps) error {
	if err := stage.ProvisionStreams(ctx, d, js, cfg.Common.Streams, proto.FramesStream, proto.EventsStream); err != nil {
		d.Log.Warn("stopped before the streams could be provisioned", "err", err)
		return ctx.Err()
	}
	return nil
}

// readFile publishes every frame of a capture file, as fast as JetStream
// takes them (the publisher blocks when its buffer is full).
func (e *engine) readFile(ctx context.Context, f *os.File) error {
	dc := e.decodeConfig()
	dc.AllowSrc = e.cfg.prefixes // a file is the user's choice: only an explicit --allow-src applies
	dec := decode.New(dc, e.stats)
	cr, err := capture.NewReader(f)
	if err != nil {
		return fmt.Errorf("--read %s: %w", e.cfg.Read, err)
	}
	var cp capture.Packet
	var p decode.Packet
	for n := 0; ; n++ {
		if n&1023 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := cr.Next(&cp); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("--read %s: %w", e.cfg.Read, err)
		}
		if dec.Captured(&p, cp.LinkType, cp.Data, cp.TimeNs, cp.Iface) {
			e.batcher.Add(&p.Frame, e.sharder.Shard(&p.Key, p.HasFlow))
		}
	}
}

func (e *engine) decodeConfig() decode.Config {
	return decode.Config{
		VXLANPort:     uint16(e.cfg.VXLANPort),
		GENEVEPort:    uint16(e.cfg.GENEVEPort),
		VNIs:          e.cfg.vnis,
		AllowSrc:      e.cfg.sourcePolicy(),
		SkipChecksums: !e.cfg.VerifyChecksums,
		MaxVNIs:       e.cfg.MaxVNIs,
		Refused:       e.refused.note,
	}
}

// DropsEvent is the JSON body published on tapline.events.decap.drops
// whenever something was lost since the previous report: totals since
// start of batches dropped before JetStream stored them (by reason), the
// kernel's receive drops on decap's sockets, datagrams too large to read,
// datagrams still queued on the sockets when the shutdown's --stop-read
// ended (StopDropped) and datagrams the sockets refused once the shutdown
// began (StopRefused), and datagrams dropped as malformed or filtered (by
// reason: "src" outer source not allowed, "vni" not in --vni, "vni_cap"
// beyond --max-vnis).
// TrackedVNIs is how many distinct VNIs are tracked (at most MaxVNIs).
//
// Instance names the decap run that reports (stage.NewInstanceID:
// "<host>/<pid>/<random>"): totals are per instance, so a reader sums the
// latest report of each instance.
type DropsEvent struct {
	Stage    string                       `json:"stage"`
	Instance string                       `json:"instance"`
	AtNs     int64                        `json:"at_ns"`
	Drops    map[string]publish.DropCount `json:"drops"`
	Kernel   uint64                       `json:"kernel_drops,omitempty"`
	Oversize uint64                       `json:"oversize_datagrams,omitempty"`
	// StopDropped and StopRefused: datagrams lost to the shutdown (see
	// udpin.Stats).
	StopDropped uint64            `json:"stop_dropped_datagrams,omitempty"`
	StopRefused uint64            `json:"stop_refused_datagrams,omitempty"`
	Malformed   map[string]uint64 `json:"malformed,omitempty"`
	Filtered    map[string]uint64 `json:"filtered,omitempty"`
	// TrackedVNIs and MaxVNIs: VNIs tracked so far and --max-vnis.
	TrackedVNIs int `json:"tracked_vnis"`
	MaxVNIs     int `json:"max_vnis"`
}

func (e *engine) reportDrops(ctx context.Context) {
	t := time.NewTicker(e.cfg.EventsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.publishDrops(false)
		}
	}
}

// publishDrops publishes a DropsEvent when any loss count grew since the
// last one.
func (e *engine) publishDrops(final bool) {
	ev := DropsEvent{Stage: "decap", Instance: e.instance, AtNs: time.Now().UnixNano(), Drops: e.pub.Drops()}
	t := e.stats.Totals()
	ev.Malformed, ev.Filtered = t.Malformed, t.Filtered
	ev.TrackedVNIs, ev.MaxVNIs = e.stats.Admitted(), e.cfg.MaxVNIs
	if in := e.intake.Load(); in != nil {
		st := in.Stats()
		ev.Kernel, ev.Oversize = st.KernelDrops, st.Truncated
		ev.StopDropped, ev.StopRefused = st.StopDropped, st.StopRefused
	}
	n := ev.Kernel + ev.Oversize + ev.StopDropped + ev.StopRefused
	for _, c := range ev.Drops {
		n += uint64(c.Batches)
	}
	for _, c := range ev.Malformed {
		n += c
	}
	for _, c := range ev.Filtered {
		n += c
	}
	e.dropsMu.Lock()
	defer e.dropsMu.Unlock()
	if n == e.lastDrops {
		return
	}
	e.lastDrops = n
	body, _ := json.Marshal(ev)
	m := nats.NewMsg(proto.EventsSubject("decap", "drops"))
	m.Header.Set(proto.HdrVersion, proto.Version)
	m.Data = body
	if err := e.nc.PublishMsg(m); err != nil {
		e.d.Log.Warn("publishing drop report failed", "err", err)
	}
	e.d.Log.Warn("loss report", "report", string(body), "final", final)
}
