package capturecmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/decap/afpacket"
	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/decap/shard"
	"github.com/tapline/tapline/decap/spool"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/stage"
)

// Main is `decap capture ARGS`; it returns the exit code.
func Main(args []string) int {
	var cfg Config
	fs := flag.NewFlagSet("decap capture", flag.ContinueOnError)
	cfg.Register(fs)
	return stage.MainCode(fs, &cfg.Common, args, cfg.Validate, func(ctx context.Context, d stage.Deps) error {
		return Run(ctx, cfg, d)
	})
}

// engine is one running capture.
type engine struct {
	cfg     Config
	d       stage.Deps
	sp      *spool.Spool
	cap     *afpacket.Capture
	sharder *shard.Sharder
	batcher *batch.Batcher
	nc      *nats.Conn
	js      jetstream.JetStream
	up      spool.UploadStats
	hb      *heartbeat

	lastDrops atomic.Uint64
	instance  string // in the drop reports

	frames, bytes, notIP atomic.Uint64
	drops                dropCounts
}

// dropCounts are frames lost before the spool, by reason.
type dropCounts struct {
	mu sync.Mutex
	m  map[string]*reasonCount
}

type reasonCount struct{ batches, frames, bytes int64 }

func (c *dropCounts) add(reason string, frames, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*reasonCount{}
	}
	r := c.m[reason]
	if r == nil {
		r = &reasonCount{}
		c.m[reason] = r
	}
	r.batches++
	r.frames += int64(frames)
	r.bytes += int64(bytes)
}

// Run captures until ctx ends, then uploads what it can for at most
// --drain-timeout (the rest stays in the spool for the next start) and
// returns nil. It starts capturing even while NATS is unreachable: frames
// wait in the spool.
func Run(ctx context.Context, cfg Config, d stage.Deps) error {
	if cfg.prog == nil {
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
	runtime.GOMAXPROCS(cfg.MaxCPU)
	debug.SetMemoryLimit(cfg.MaxMemory)
	if cfg.Filter == "" {
		d.Log.Warn("no --filter: every frame of the interface is captured, the upload to NATS too if it leaves by this interface; exclude it (e.g. --filter 'not port 4222')")
	}
	sp, err := spool.Open(spool.Config{Dir: cfg.SpoolDir, MaxBytes: cfg.SpoolBytes})
	if err != nil {
		return err
	}
	defer sp.Close()
	e := &engine{cfg: cfg, d: d, sp: sp, sharder: shard.New(cfg.Common.Shards, shard.DefaultFragTable), instance: stage.NewInstanceID()}
	down, err := e.startHeartbeat()
	if err != nil {
		return err
	}
	defer e.hb.stop()
	if st := sp.Stats(); st.Records > 0 {
		d.Log.Info("spool holds frames of an earlier run: uploading them first", "records", st.Records, "bytes", st.Pending)
	}
	e.cap, err = afpacket.Open(afpacket.Config{Iface: cfg.Iface, Sockets: cfg.Sockets, RcvBuf: cfg.RingBytes,
		Batch: cfg.ReadBatch, Snaplen: cfg.Snaplen, Filter: cfg.prog, StopRead: cfg.StopRead})
	if err != nil {
		return err
	}
	defer e.cap.Close()
	if err := e.register(); err != nil {
		return err
	}
	e.nc, _, err = cfg.Common.Connect(ctx, "tapline-decap-capture", d.Log)
	if err != nil {
		return err
	}
	defer e.nc.Close()
	if e.js, err = jetstream.New(e.nc, jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
		jetstream.WithPublishAsyncMaxPending(256)); err != nil {
		return err
	}
	d.Health.Add("spool", e.healthy)
	d.Log.Info("capturing", "iface", cfg.Iface, "filter", cfg.kernelFilter(), "vni", cfg.VNI, "sockets", cfg.Sockets,
		"upload_rate", cfg.UploadRate, "spool_bytes", cfg.SpoolBytes, "max_cpu", cfg.MaxCPU, "max_memory", cfg.MaxMemory)
	if down != nil {
		d.Log.Warn("capture was not running: frames of that time are lost (reassemble reports the gaps)",
			"from", time.Unix(0, down.FromNs).UTC(), "to", time.Unix(0, down.ToNs).UTC())
	}

	e.batcher = batch.New(batch.Config{MaxBytes: cfg.BatchBytes, Delay: cfg.BatchDelay}, e.spoolBatch)

	var bg sync.WaitGroup
	bctx, stopBg := context.WithCancel(context.Background())
	uctx, stopUpload := context.WithCancel(context.Background())
	bg.Add(3)
	go func() { defer bg.Done(); e.batcher.Run(bctx) }()
	go func() { defer bg.Done(); e.report(bctx, down) }()
	uploadDone := make(chan error, 1)
	go func() { defer bg.Done(); uploadDone <- e.upload(uctx) }()
	go e.provision(bctx)

	// Run returns once the sockets' queues are read (or --stop-read
	// passed): the flush then puts every frame read into the spool.
	runErr := e.cap.Run(ctx, e.handle)
	e.batcher.Flush()
	e.logStop()

	// Drain: upload for at most --drain-timeout; the rest waits in the
	// spool for the next run.
	deadline := time.Now().Add(cfg.DrainTimeout)
	for sp.Stats().Records > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stopUpload()
	stopBg()
	bg.Wait()
	if err := <-uploadDone; err != nil && !errors.Is(err, context.Canceled) {
		d.Log.Warn("upload stopped", "err", err)
	}
	e.publishDrops(nil, true)
	st := sp.Stats()
	d.Log.Info("capture done", "frames", e.frames.Load(), "bytes", e.bytes.Load(), "uploaded_bytes", e.up.Bytes.Load(),
		"spooled_records_left", st.Records, "spool_peak_bytes", st.Peak, "max_delay", time.Duration(e.up.MaxDelayNs.Load()))
	_ = e.nc.Flush()
	return runErr
}

// logStop reports the capture's stop once: at WARN when frames were still
// queued when --stop-read ended.
func (e *engine) logStop() {
	st := e.cap.StopStats()
	if !st.Stopped {
		return
	}
	if st.RefuseErrors > 0 {
		e.d.Log.Warn("capture sockets could not refuse new frames at stop: they were read until --stop-read passed", "sockets", st.RefuseErrors)
	}
	if st.Dropped > 0 {
		e.d.Log.Warn("capture stopped with frames still queued after --stop-read: dropped",
			"dropped", st.Dropped, "read", st.Read, "refused", st.Refused, "stop_read", e.cfg.StopRead)
		return
	}
	e.d.Log.Info("capture stopped: queues read empty", "read", st.Read, "refused", st.Refused)
}

// handle turns captured frames into frames of the batches.
func (e *engine) handle(_ int, pkts []afpacket.Packet) {
	vni := uint32(e.cfg.VNI)
	var n uint64
	for i := range pkts {
		p := &pkts[i]
		f := framebatch.Frame{TimeNs: p.TimeNs, VNI: vni, Encap: framebatch.EncapNone, Link: flow.LinkEthernet,
			OrigLen: p.WireLen, Data: p.Data}
		k, err := flow.Parse(flow.LinkEthernet, p.Data)
		if err != nil {
			e.notIP.Add(1)
		}
		e.batcher.Add(&f, e.sharder.Shard(&k, err == nil))
		n += uint64(p.WireLen)
	}
	e.frames.Add(uint64(len(pkts)))
	e.bytes.Add(n)
}

// spoolBatch stores a finished batch in the spool; a full spool drops it,
// counted.
func (e *engine) spoolBatch(b *batch.Batch) {
	defer e.batcher.Release(b)
	err := e.sp.Append(b.Subject, b.W.Bytes())
	switch {
	case err == nil:
	case errors.Is(err, spool.ErrFull):
		e.drops.add("spool_full", b.W.Frames(), len(b.W.Bytes()))
	default:
		e.drops.add("spool_error", b.W.Frames(), len(b.W.Bytes()))
		e.d.Log.Warn("spooling a batch failed: frames dropped", "frames", b.W.Frames(), "err", err)
	}
}

func (e *engine) upload(ctx context.Context) error {
	return e.sp.Upload(ctx, e.js, spool.UploadConfig{Rate: e.cfg.UploadRate, AckTimeout: e.cfg.AckTimeout,
		OnFailure: func(failures int, _ error) {
			if failures%5 == 0 {
				go decap.Reprovision(e.js, e.cfg.Common.Streams, e.d.Log)
			}
		}}, &e.up, e.d.Log)
}

// provision creates the streams once NATS answers, or keeps them and
// warns about settings that differ (stage.ProvisionStreams, which also
// drives the "streams" health check). Capture does not wait for it: the
// spool holds the frames meanwhile.
func (e *engine) provision(ctx context.Context) {
	_ = stage.ProvisionStreams(ctx, e.d, e.js, e.cfg.Common.Streams, proto.FramesStream, proto.EventsStream)
}

// healthy fails while the spool is nearly full (uploads do not keep up or
// NATS is away too long).
func (e *engine) healthy() error {
	st := e.sp.Stats()
	if st.Pending > e.cfg.SpoolBytes*9/10 {
		return fmt.Errorf("spool %d%% full (%d of %d bytes): frames will be dropped", st.Pending*100/e.cfg.SpoolBytes, st.Pending, e.cfg.SpoolBytes)
	}
	return nil
}

// heartbeat writes the time into the spool directory every second, so the
// next start knows since when capture was not running.
type heartbeat struct {
	f      *os.File
	done   chan struct{}
	exited chan struct{}
}

func (e *engine) startHeartbeat() (*Downtime, error) {
	f, err := os.OpenFile(e.cfg.SpoolDir+"/alive", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var down *Downtime
	var b [20]byte
	if n, _ := f.ReadAt(b[:], 0); n > 0 {
		var last int64
		if _, err := fmt.Sscan(string(b[:n]), &last); err == nil && last > 0 {
			down = &Downtime{FromNs: last, ToNs: time.Now().UnixNano()}
		}
	}
	e.hb = &heartbeat{f: f, done: make(chan struct{}), exited: make(chan struct{})}
	write := func() { _, _ = f.WriteAt(fmt.Appendf(nil, "%019d", time.Now().UnixNano()), 0) }
	write()
	go func() {
		defer close(e.hb.exited)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-e.hb.done:
				write()
				return
			case <-t.C:
				write()
			}
		}
	}()
	return down, nil
}

func (h *heartbeat) stop() {
	close(h.done)
	<-h.exited
	h.f.Close()
}
