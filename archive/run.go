package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/archive/seekable"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/stage"
)

// Run archives frames until ctx is done, then stores what it holds (within
// DrainTimeout) and returns nil.
func Run(ctx context.Context, cfg Config, d stage.Deps) error {
	// Every check /healthz needs, failing until registered: connected to
	// NATS is not healthy while the streams and the consumer are being
	// provisioned.
	d.Health.Expect("nats", "store", "streams", "consumer")
	level, err := ParseLevel(cfg.Level)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.Store.Location, cfg.Store.S3)
	if err != nil {
		return stage.ConfigError(err)
	}
	if err := probeStore(ctx, st, cfg.StoreWait, d.Log); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while the store was unreachable
		}
		return err
	}
	return run(ctx, cfg, d, st, level)
}

type archiver struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	st    store.Store
	nc    *nats.Conn
	tr    *tracker
	enc   *seekable.Encoder
	p     chunkParams
	open  map[partKey]*chunk
	vnis  *vniCap
	parts map[int64][]framebatch.Frame
	order []int64
	up    chan *sealed
	frms  []framebatch.Frame
	ratio struct {
		sync.Mutex
		u, c float64
	}
	lastErr struct {
		sync.Mutex
		err error
		at  time.Time
	}
}

func run(ctx context.Context, cfg Config, d stage.Deps, st store.Store, level zstd.EncoderLevel) error {
	enc, err := seekable.NewEncoder(level)
	if err != nil {
		return err
	}
	a := &archiver{
		cfg: cfg, log: d.Log.With("store", st.String()), m: newMetrics(d.Metrics), st: st, tr: newTracker(4 * cfg.MaxPendingBatches), enc: enc,
		p:     newParams(int(cfg.FrameBytes), cfg.ChunkBytes, cfg.MaxFlows),
		open:  map[partKey]*chunk{},
		vnis:  newVNICap(cfg.MaxVNIs),
		parts: map[int64][]framebatch.Frame{},
		up:    make(chan *sealed, cfg.Uploaders),
	}
	nc, js, err := cfg.Common.Connect(ctx, "tapline-archive", d.Log)
	if err != nil {
		return err
	}
	defer nc.Close()
	a.nc = nc
	d.Health.Add("nats", stage.NATSCheck(nc))
	d.Health.Add("store", func() error {
		a.lastErr.Lock()
		defer a.lastErr.Unlock()
		if a.lastErr.err != nil {
			return fmt.Errorf("storing chunks fails: %v", a.lastErr.err)
		}
		return nil
	})
	if err := stage.ProvisionStreams(ctx, d, js, a.cfg.Common.Streams, proto.FramesStream); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while NATS was unreachable
		}
		return err
	}
	cons, err := a.provision(ctx, js)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while NATS was unreachable
		}
		return err
	}
	d.Health.Add("consumer", func() error { return nil })
	a.log.Info("archiving", "consumer", cfg.Consumer, "chunk_bytes", cfg.ChunkBytes, "chunk_age", cfg.ChunkAge)
	var keysDone chan struct{}
	if cfg.Keys {
		keysDone = make(chan struct{})
		go func() { defer close(keysDone); a.keepKeys(ctx, js, d) }()
	}

	// Uploaders run until the drain deadline after ctx ends.
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	var wg sync.WaitGroup
	for range cfg.Uploaders {
		wg.Add(1)
		go func() { defer wg.Done(); a.uploader(drainCtx) }()
	}
	bgCtx, stopBg := context.WithCancel(ctx)
	defer stopBg()
	go a.heartbeat(bgCtx)
	go a.watchBacklog(bgCtx, cons)

	err = a.consume(ctx, js, cons)

	// Drain: store what is open, wait for the uploads up to DrainTimeout.
	timer := time.AfterFunc(cfg.DrainTimeout, cancelDrain)
	defer timer.Stop()
	draining := d.Drain.Begin(fmt.Sprintf("archive: storing %d open chunks in %s (at most --drain-timeout %s)", len(a.open), st, cfg.DrainTimeout))
	defer draining()
	a.sealAll(drainCtx, time.Now())
	a.reportOverflow()
	close(a.up)
	wg.Wait()
	if b, n := a.tr.load(); n > 0 {
		a.log.Warn("stopped with batches not stored; JetStream redelivers them", "batches", n, "bytes", b)
	}
	stopBg()
	if keysDone != nil {
		<-keysDone
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// provision creates the frames stream and the durable consumer, retrying
// with short timeouts (the first JetStream request after a NATS restart can
// be lost).
func (a *archiver) provision(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	var cons jetstream.Consumer
	err := retry(ctx, a.log, proto.ProvisionTimeout(a.cfg.Common.Streams.Replicas), "provision stream and consumer", func(ctx context.Context) error {
		if err := proto.EnsureStreams(ctx, js, a.cfg.Common.Streams, proto.FramesStream); err != nil {
			return err
		}
		var err error
		cons, err = js.CreateOrUpdateConsumer(ctx, proto.FramesStream, jetstream.ConsumerConfig{
			Durable:       a.cfg.Consumer,
			Description:   "tapline archive: frames to the packet archive",
			FilterSubject: proto.FramesPrefix + ".>",
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       a.cfg.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: a.cfg.MaxPendingBatches,
		})
		return err
	})
	return cons, err
}

// retry calls f with a timeout, first timeout and doubled after each
// attempt that timed out (up to proto.MaxProvisionTimeout: a cluster's
// leader elections take what they take), until it succeeds or ctx ends.
func retry(ctx context.Context, log *slog.Logger, timeout time.Duration, what string, f func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := f(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) {
			timeout = min(2*timeout, proto.MaxProvisionTimeout)
		}
		log.Warn(what+" failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// consume is the main loop: batches into chunks, rotation by size, age and
// memory.
func (a *archiver) consume(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer) error {
	msgs := make(chan jetstream.Msg)
	go a.feed(ctx, js, cons, msgs)
	tick := time.NewTicker(min(a.cfg.ChunkAge/4, time.Second))
	defer tick.Stop()
	for {
		// Back-pressure: stop taking batches while too much is pending.
		b, n := a.tr.load()
		full := b >= a.cfg.MaxPending || n >= a.cfg.MaxPendingBatches*3/4
		in := msgs
		if full {
			a.sealAll(ctx, time.Now())
			in = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-in:
			if !ok {
				return nil // stopping
			}
			a.handle(ctx, m)
		case <-tick.C:
			a.rotateAged(ctx, time.Now())
		case <-a.tr.changed:
		}
	}
}

// feed pulls batches into msgs until ctx ends. If the pull iterator ends
// for another reason (the consumer was deleted, a terminal error), it
// provisions the consumer again and resumes.
func (a *archiver) feed(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, msgs chan<- jetstream.Msg) {
	defer close(msgs)
	for ctx.Err() == nil {
		it, err := cons.Messages(jetstream.PullMaxMessages(a.cfg.Fetch))
		if err == nil {
			stop := context.AfterFunc(ctx, it.Stop)
			for {
				var m jetstream.Msg
				if m, err = it.Next(); err != nil {
					break
				}
				select {
				case msgs <- m:
					continue
				case <-ctx.Done():
				}
				break
			}
			stop()
			it.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("frames consumer stopped; subscribing again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if c, err := a.provision(ctx, js); err == nil {
			cons = c
		}
	}
}

// handle adds one batch to the chunks of its VNI and hours.
func (a *archiver) handle(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		a.log.Warn("message without JetStream metadata", "subject", m.Subject(), "err", err)
		return
	}
	seq := md.Sequence.Stream
	if md.NumDelivered > 1 {
		a.m.redelivered.Inc()
	}
	data := m.Data()
	pm, seen := a.tr.begin(seq, m.Reply(), len(data))
	switch seen {
	case pending:
		return // already in a chunk of ours: a redelivery while we hold it
	case storedAlready:
		a.ackReplies([]string{m.Reply()}) // a stale redelivery of a stored batch
		return
	}
	vni, _, err := proto.ParseSubject(m.Subject())
	a.frms = a.frms[:0]
	verbatim := false
	if err == nil {
		r := framebatch.NewReader(data)
		for {
			var f framebatch.Frame
			if e := r.Next(&f); e != nil {
				if !errors.Is(e, io.EOF) {
					err = e
				}
				break
			}
			a.frms = append(a.frms, f)
		}
		verbatim = err == nil && r.Verbatim()
	}
	if err != nil {
		a.reject(ctx, seq, pm, m, err)
		return
	}
	if len(a.frms) == 0 {
		a.ackReplies(a.tr.finish(pm)) // nothing to archive
		return
	}
	if !a.vnis.admit(vni) {
		a.overflow(vni, len(a.frms))
		a.ackReplies(a.tr.finish(pm)) // not archived: counted and reported
		return
	}
	// Split by hour (almost always one): every packet goes to the chunk of
	// its VNI and UTC hour. All parts are attached before any chunk can be
	// sealed, so the batch is acknowledged only when every part is stored.
	a.order = a.order[:0]
	h0 := hourOf(a.frms[0].TimeNs)
	split := false
	for i := range a.frms {
		if hourOf(a.frms[i].TimeNs) != h0 {
			split = true
			break
		}
	}
	if !split {
		a.order = append(a.order, h0)
		a.parts[h0] = a.frms
	} else {
		clear(a.parts)
		for _, f := range a.frms {
			h := hourOf(f.TimeNs)
			if _, ok := a.parts[h]; !ok {
				a.order = append(a.order, h)
			}
			a.parts[h] = append(a.parts[h], f)
		}
	}
	now := time.Now()
	chunks := make([]*chunk, len(a.order))
	for i, h := range a.order {
		k := partKey{vni, h}
		c := a.open[k]
		if c == nil {
			c = newChunk(a.p, a.enc, k, now)
			a.open[k] = c
		}
		a.tr.attach(c.grp, pm)
		chunks[i] = c
	}
	raw := data // one part holding the whole batch: copied as it is
	if split || !verbatim {
		raw = nil
	}
	for i, h := range a.order {
		c := chunks[i]
		c.add(seq, a.parts[h], raw)
		if c.usize() >= a.cfg.ChunkBytes {
			a.seal(ctx, c, now)
		}
	}
	clear(a.parts)
	b, n := a.tr.load()
	a.m.pendingBytes.Set(float64(b))
	a.m.pendingBatches.Set(float64(n))
}

// reject stores a batch that is not valid pcapng as is under
// rejected/<seq>.bin, so nothing is silently lost, and acknowledges it once
// stored.
func (a *archiver) reject(ctx context.Context, seq uint64, pm *pmsg, m jetstream.Msg, why error) {
	a.m.rejected.Inc()
	a.log.Warn("frame batch is not valid pcapng; storing it raw under rejected/", "seq", seq, "subject", m.Subject(), "err", why)
	g := &group{}
	a.tr.attach(g, pm)
	a.send(ctx, &sealed{key: "rejected/" + fmt.Sprintf("%020d", seq) + ".bin", data: append([]byte(nil), m.Data()...), grp: g})
}

// rotateAged stores chunks older than ChunkAge.
func (a *archiver) rotateAged(ctx context.Context, now time.Time) {
	for _, c := range a.open {
		if now.Sub(c.opened) >= a.cfg.ChunkAge {
			a.seal(ctx, c, now)
		}
	}
}

func (a *archiver) sealAll(ctx context.Context, now time.Time) {
	for _, c := range a.open {
		a.seal(ctx, c, now)
	}
}

// seal finishes c and hands it to the uploaders.
func (a *archiver) seal(ctx context.Context, c *chunk, now time.Time) {
	delete(a.open, c.key)
	if c.empty() {
		return
	}
	s, err := c.seal(now)
	if err != nil {
		// A bug, not bad input: keep the batches unacknowledged so they
		// are redelivered rather than lost.
		a.log.Error("cannot seal chunk; its batches will be redelivered", "vni", c.key.vni, "err", err)
		a.tr.done(c.grp, false)
		return
	}
	a.send(ctx, s)
}

func (a *archiver) send(ctx context.Context, s *sealed) {
	select {
	case a.up <- s:
	case <-ctx.Done():
		// Stopping and the uploaders are gone: the batches stay
		// unacknowledged and are redelivered.
		a.tr.done(s.grp, false)
	}
}

// uploader stores sealed chunks: the chunk first, then its index (the
// index is what makes a chunk visible to queries), retrying with backoff,
// then acknowledges the chunk's batches.
func (a *archiver) uploader(ctx context.Context) {
	for s := range a.up {
		start := time.Now()
		wait := 200 * time.Millisecond
		var err error
		for attempt := 0; ; attempt++ {
			if attempt > 0 {
				a.m.uploadRetries.Inc()
			}
			err = a.store(ctx, s)
			if err == nil {
				a.lastErr.Lock()
				a.lastErr.err = nil
				a.lastErr.Unlock()
				break
			}
			a.m.uploadErrors.Inc()
			a.lastErr.Lock()
			a.lastErr.err, a.lastErr.at = err, time.Now()
			a.lastErr.Unlock()
			a.log.Warn("storing chunk failed; retrying", "key", s.key, "attempt", attempt+1, "retry_in", wait, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			if ctx.Err() != nil {
				break
			}
			wait = min(2*wait, 30*time.Second)
		}
		if err != nil {
			a.log.Warn("gave up storing chunk at stop; its batches will be redelivered", "key", s.key)
			a.tr.done(s.grp, false)
			continue
		}
		a.m.uploadSeconds.Observe(time.Since(start).Seconds())
		if a.cfg.testDropAck != nil && a.cfg.testDropAck(s.key) {
			a.tr.done(s.grp, false)
			continue
		}
		a.ack(s)
		if s.idx != nil {
			a.p.release(s.data) // stored: the buffer serves the next chunk
		}
	}
}

func (a *archiver) store(ctx context.Context, s *sealed) error {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.UploadTimeout)
	defer cancel()
	if err := a.st.Put(cctx, s.key, s.data); err != nil {
		return err
	}
	if s.idxKey != "" {
		return a.st.Put(cctx, s.idxKey, s.idxJSON)
	}
	return nil
}

// ack acknowledges the batches of a stored chunk and counts it.
func (a *archiver) ack(s *sealed) {
	replies, n := a.tr.done(s.grp, true)
	a.ackReplies(replies)
	a.m.batches.Add(float64(n))
	if s.idx == nil {
		return
	}
	a.m.chunks.Inc()
	a.m.frames.Add(float64(s.idx.Packets))
	a.m.frameBytes.Add(float64(s.idx.CapturedBytes))
	a.m.storedBytes.Add(float64(len(s.data)))
	a.m.uncompressedBytes.Add(float64(s.idx.UncompressedSize))
	a.ratio.Lock()
	a.ratio.u += float64(s.idx.UncompressedSize)
	a.ratio.c += float64(len(s.data))
	if a.ratio.c > 0 {
		a.m.ratio.Set(a.ratio.u / a.ratio.c)
	}
	a.ratio.Unlock()
	a.log.Debug("chunk stored", "key", s.key, "packets", s.idx.Packets, "bytes", len(s.data))
}

// ackReplies acknowledges deliveries by their reply subjects.
func (a *archiver) ackReplies(replies []string) {
	if len(replies) == 0 {
		return
	}
	for _, r := range replies {
		if err := a.nc.Publish(r, proto.AckBody); err != nil {
			a.log.Warn("ack failed; the batch will be redelivered and deduplicated by queries", "err", err)
		}
	}
	if err := a.nc.FlushTimeout(5 * time.Second); err != nil {
		a.log.Warn("flushing acks failed; batches may be redelivered", "err", err)
	}
}

// heartbeat sends progress acks for every pending batch a third of the ack
// wait, so JetStream does not redeliver batches that wait in an open chunk
// or an upload being retried.
func (a *archiver) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, r := range a.tr.replies() {
				_ = a.nc.Publish(r, proto.ProgressBody)
			}
		}
	}
}

// watchBacklog publishes the consumer's backlog as a metric.
func (a *archiver) watchBacklog(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cons.Info(cctx)
		cancel()
		if err == nil {
			a.m.backlog.Set(float64(info.NumPending + uint64(info.NumAckPending)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
