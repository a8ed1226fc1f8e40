// Package publish sends frame batches to JetStream: asynchronous publishes
// with a bounded number in flight, a bounded buffer in front of them for
// when JetStream is slow or down, and counted drops past it. Failed
// publishes (timeouts, disconnections) are retried with the same
// Nats-Msg-Id, so JetStream stores a batch once even when an ack was lost.
// The NATS connection reconnects by itself; the publisher just keeps
// retrying until the buffer fills.
package publish

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/proto"
)

// Defaults of Config.
const (
	DefaultMaxInflight = 256
	DefaultBufferBytes = 256 << 20
	DefaultAckTimeout  = 5 * time.Second
	DefaultRetryWait   = 250 * time.Millisecond
	// DefaultMaxInflightShardBytes is half of reassemble's default
	// --reorder-window (1 MiB): see Config.MaxInflightShardBytes.
	DefaultMaxInflightShardBytes = 512 << 10
)

// Drop reasons.
const (
	ReasonBufferFull = "buffer_full" // the buffer was full (JetStream slow or down)
	ReasonRejected   = "rejected"    // JetStream or the client refused the batch for good (e.g. too large)
	ReasonShutdown   = "shutdown"    // still unpublished when the drain timed out
)

// Config bounds the publisher.
type Config struct {
	// MaxInflight is the most batches awaiting a JetStream ack.
	MaxInflight int
	// BufferBytes bounds the bytes of batches queued or in flight.
	BufferBytes int64
	// AckTimeout is how long to wait for one ack before retrying.
	AckTimeout time.Duration
	// RetryWait is the pause after a failed publish.
	RetryWait time.Duration
	// MaxInflightShardBytes bounds the bytes of one subject's (shard's)
	// batches awaiting an ack (one batch is always allowed). A publish
	// whose ack times out while later ones are stored (the stream leader
	// lost it in an election) is resent after those, so at most this many
	// bytes of its shard land ahead of it: kept below reassemble's
	// --reorder-window, the late batch fills its hole instead of being
	// reported as mirror loss.
	MaxInflightShardBytes int64
	// NoStream, when set, is called (at most every 5 s, in its own
	// goroutine) when JetStream answers that no stream takes the subject,
	// e.g. to provision the streams again after someone deleted them.
	NoStream func()
}

// DropCount is what was dropped for one reason.
type DropCount struct {
	Batches int64 `json:"batches"`
	Frames  int64 `json:"frames"`
	Bytes   int64 `json:"bytes"`
}

type item struct {
	b     *batch.Batch
	n     uint64 // submit order
	sent  bool   // counted in shardBytes
	id    string
	size  int64
	tries int
	fut   jetstream.PubAckFuture
}

// Publisher publishes batches. Create with New, start with Start, end with
// Drain.
type Publisher struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	release func(*batch.Batch)
	prefix  string

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []*item
	bytes    int64 // queued + in flight
	inflight int
	// shardBytes is the bytes in flight by subject.
	shardBytes map[string]int64
	seq        uint64
	stopping   bool
	noBlock    bool
	// broken is set when a publish failed: nothing is sent until every
	// publish in flight has its outcome and retryAt has passed, then the
	// queue (the failed batches back in submit order, then the newer ones)
	// is sent in order.
	broken   bool
	retryAt  time.Time
	lastAck  time.Time
	lastErr  error
	lastNoSt time.Time
	drops    map[string]*DropCount

	sem  chan struct{}
	acks chan *item
	done chan struct{}
	wg   sync.WaitGroup

	mBatches, mBytes, mFrames, mRetries prometheus.Counter
	mDrops, mDropFrames                 *prometheus.CounterVec
	mBuffer, mInflight                  prometheus.GaugeFunc
}

// New returns a publisher on nc. release is called with every batch once
// it is published or dropped. Metrics are registered on reg (nil: none).
func New(nc *nats.Conn, cfg Config, reg prometheus.Registerer, log *slog.Logger, release func(*batch.Batch)) (*Publisher, error) {
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = DefaultRetryWait
	}
	if cfg.MaxInflightShardBytes <= 0 {
		cfg.MaxInflightShardBytes = DefaultMaxInflightShardBytes
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxInflight+16), jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, err
	}
	p := &Publisher{
		cfg: cfg, nc: nc, js: js, log: log, release: release,
		prefix:     nuid.Next(),
		drops:      map[string]*DropCount{},
		shardBytes: map[string]int64{},
		sem:        make(chan struct{}, cfg.MaxInflight),
		acks:       make(chan *item, cfg.MaxInflight),
		done:       make(chan struct{}),
		lastAck:    time.Now(),
	}
	p.cond = sync.NewCond(&p.mu)
	p.mBatches = prometheus.NewCounter(prometheus.CounterOpts{Name: "tapline_decap_published_batches_total", Help: "Frame batches stored by JetStream."})
	p.mBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "tapline_decap_published_bytes_total", Help: "Bytes of frame batches stored by JetStream."})
	p.mFrames = prometheus.NewCounter(prometheus.CounterOpts{Name: "tapline_decap_published_frames_total", Help: "Frames in batches stored by JetStream."})
	p.mRetries = prometheus.NewCounter(prometheus.CounterOpts{Name: "tapline_decap_publish_retries_total", Help: "Batch publishes retried after a timeout or disconnection."})
	p.mDrops = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tapline_decap_publish_drops_total", Help: "Frame batches dropped before JetStream stored them, by reason (buffer_full, rejected, shutdown)."}, []string{"reason"})
	p.mDropFrames = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tapline_decap_publish_dropped_frames_total", Help: "Frames in dropped batches, by reason."}, []string{"reason"})
	p.mBuffer = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tapline_decap_publish_buffer_bytes", Help: "Bytes of batches queued or awaiting an ack."}, func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return float64(p.bytes)
	})
	p.mInflight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tapline_decap_publish_inflight", Help: "Batches awaiting a JetStream ack."}, func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return float64(p.inflight)
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{p.mBatches, p.mBytes, p.mFrames, p.mRetries, p.mDrops, p.mDropFrames, p.mBuffer, p.mInflight} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// Start runs the sending and acknowledging loops.
func (p *Publisher) Start() {
	p.wg.Add(2)
	go p.sendLoop()
	go p.ackLoop()
}

// Submit queues b. When the buffer is full it waits if block is true
// (reading a file: back-pressure), else drops b, counts it and returns
// false.
func (p *Publisher) Submit(b *batch.Batch, block bool) bool {
	size := int64(len(b.W.Bytes()))
	p.mu.Lock()
	var paused time.Time
	for p.bytes > 0 && p.bytes+size > p.cfg.BufferBytes {
		if !block || p.stopping || p.noBlock {
			p.dropLocked(b, ReasonBufferFull)
			p.mu.Unlock()
			return false
		}
		if paused.IsZero() && (p.broken || !p.nc.IsConnected()) {
			// Only a wait for a failing JetStream is worth a line; a
			// full buffer is the normal pace of reading a file.
			paused = time.Now()
			p.log.Warn("reading paused: --buffer-bytes of batches wait for JetStream; it goes on when they are stored",
				"buffer_bytes", p.cfg.BufferBytes, "err", p.lastErr)
		}
		p.cond.Wait()
	}
	if !paused.IsZero() {
		p.log.Info("reading resumed", "paused", time.Since(paused).Round(time.Millisecond))
	}
	p.seq++
	p.queue = append(p.queue, &item{b: b, n: p.seq, id: proto.SeqMsgID(p.prefix, p.seq), size: size})
	p.bytes += size
	p.cond.Broadcast()
	p.mu.Unlock()
	return true
}

// StopBlocking makes every Submit, waiting or future, drop instead of
// waiting for room: called when the caller is shutting down.
func (p *Publisher) StopBlocking() {
	p.mu.Lock()
	p.noBlock = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// dropLocked counts and releases a dropped batch; p.mu is held.
func (p *Publisher) dropLocked(b *batch.Batch, reason string) {
	d := p.drops[reason]
	if d == nil {
		d = &DropCount{}
		p.drops[reason] = d
	}
	n := int64(b.W.Frames())
	d.Batches++
	d.Frames += n
	d.Bytes += int64(len(b.W.Bytes()))
	p.mDrops.WithLabelValues(reason).Inc()
	p.mDropFrames.WithLabelValues(reason).Add(float64(n))
	p.release(b)
}

// Drops returns the drop counts by reason so far.
func (p *Publisher) Drops() map[string]DropCount {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]DropCount, len(p.drops))
	for k, v := range p.drops {
		out[k] = *v
	}
	return out
}

// Pending is the number of bytes queued or awaiting an ack.
func (p *Publisher) Pending() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes
}

// Healthy returns nil when the publisher can publish: NATS is connected and
// JetStream acknowledged something recently whenever there is work.
func (p *Publisher) Healthy() error {
	if !p.nc.IsConnected() {
		return errors.New("not connected to NATS (" + p.nc.Status().String() + ")")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes > 0 && time.Since(p.lastAck) > 2*p.cfg.AckTimeout {
		msg := "JetStream has not acknowledged a batch for " + time.Since(p.lastAck).Round(time.Second).String()
		if p.lastErr != nil {
			msg += ": " + p.lastErr.Error()
		}
		return errors.New(msg)
	}
	return nil
}

func (p *Publisher) sendLoop() {
	defer p.wg.Done()
	defer close(p.acks)
	for {
		// A slot first, then the batch: a slot freed by a failed publish
		// is taken only after that failure has held further sends.
		select {
		case p.sem <- struct{}{}:
		case <-p.done:
			return
		}
		it := p.next()
		if it == nil {
			<-p.sem
			return
		}
		msg := &nats.Msg{Subject: it.b.Subject, Data: it.b.W.Bytes(), Header: nats.Header{jetstream.MsgIDHeader: []string{it.id}}}
		fut, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			<-p.sem
			p.mu.Lock()
			p.inflight--
			p.doneLocked(it)
			p.cond.Broadcast()
			p.mu.Unlock()
			if errors.Is(err, nats.ErrMaxPayload) {
				p.mu.Lock()
				p.bytes -= it.size
				p.lastErr = err
				p.dropLocked(it.b, ReasonRejected)
				p.cond.Broadcast()
				p.mu.Unlock()
				p.log.Warn("batch rejected", "subject", it.b.Subject, "bytes", it.size, "err", err)
				continue
			}
			p.fail(it, err)
			continue
		}
		it.fut = fut
		p.acks <- it
	}
}

// next takes the oldest queued batch to send, counted in flight, or
// returns nil when stopping with nothing queued. After a failure it waits
// until every publish in flight has its outcome (the failed ones are back
// in the queue, in order) and RetryWait has passed; it never sends while
// the connection is down (the client would buffer the batch and flush it
// at the reconnect, ahead of older ones still to be resent).
func (p *Publisher) next() *item {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		for len(p.queue) == 0 && !p.stopping {
			p.cond.Wait()
		}
		if len(p.queue) == 0 {
			return nil
		}
		if p.stopping {
			break // Drain: publish what is left as it comes
		}
		if p.broken && p.inflight > 0 {
			p.cond.Wait()
			continue
		}
		wait := time.Duration(0)
		if p.broken {
			wait = time.Until(p.retryAt)
		}
		if wait <= 0 && !p.nc.IsConnected() {
			wait = p.cfg.RetryWait
		}
		if wait > 0 {
			p.mu.Unlock()
			select {
			case <-time.After(wait):
			case <-p.done:
			}
			p.mu.Lock()
			continue
		}
		p.broken = false
		if i := p.sendable(); i >= 0 {
			return p.takeLocked(i)
		}
		p.cond.Wait() // every queued subject has its in-flight bytes
	}
	return p.takeLocked(0)
}

// sendable returns the index of the oldest queued batch whose subject has
// room for it in flight (MaxInflightShardBytes), or -1. Batches of one
// subject stay in submit order: an earlier one without room blocks the
// later ones of its subject. Only the first sendScan batches are looked
// at, so a long queue of one full subject costs little per outcome.
func (p *Publisher) sendable() int {
	var full map[string]bool
	for i, it := range p.queue[:min(len(p.queue), sendScan)] {
		subj := it.b.Subject
		if full[subj] {
			continue
		}
		if in := p.shardBytes[subj]; in == 0 || in+it.size <= p.cfg.MaxInflightShardBytes {
			return i
		}
		if full == nil {
			full = map[string]bool{}
		}
		full[subj] = true
	}
	return -1
}

// sendScan is how many queued batches sendable looks at.
const sendScan = 256

// takeLocked removes queue[i] and counts it in flight.
func (p *Publisher) takeLocked(i int) *item {
	it := p.queue[i]
	if i == 0 {
		p.queue[0] = nil
		p.queue = p.queue[1:]
	} else {
		p.queue = slices.Delete(p.queue, i, i+1)
	}
	p.inflight++
	it.sent = true
	p.shardBytes[it.b.Subject] += it.size
	return it
}

// doneLocked uncounts a batch whose publish has its outcome.
func (p *Publisher) doneLocked(it *item) {
	if !it.sent {
		return
	}
	it.sent = false
	subj := it.b.Subject
	if p.shardBytes[subj] -= it.size; p.shardBytes[subj] <= 0 {
		delete(p.shardBytes, subj)
	}
}

func (p *Publisher) ackLoop() {
	defer p.wg.Done()
	for it := range p.acks {
		var err error
		select {
		case <-it.fut.Ok():
		case err = <-it.fut.Err():
		}
		p.mu.Lock()
		if err != nil && !rejectedForGood(err) {
			// Hold further sends before the slot is free (see next).
			p.broken = true
			p.retryAt = time.Now().Add(p.cfg.RetryWait)
		}
		p.inflight--
		p.doneLocked(it)
		p.cond.Broadcast()
		p.mu.Unlock()
		<-p.sem
		if err != nil {
			if rejectedForGood(err) {
				p.mu.Lock()
				p.bytes -= it.size
				p.lastErr = err
				p.dropLocked(it.b, ReasonRejected)
				p.cond.Broadcast()
				p.mu.Unlock()
				p.log.Warn("batch rejected by JetStream", "subject", it.b.Subject, "err", err)
				continue
			}
			p.fail(it, err)
			continue
		}
		frames := it.b.W.Frames()
		p.mBatches.Inc()
		p.mBytes.Add(float64(it.size))
		p.mFrames.Add(float64(frames))
		p.mu.Lock()
		p.bytes -= it.size
		p.lastAck = time.Now()
		p.lastErr = nil
		p.cond.Broadcast()
		p.mu.Unlock()
		p.release(it.b)
	}
}

// fail puts a batch back into the queue, in submit order, after a
// transient error, and holds further sends for RetryWait and until every
// publish in flight has its outcome: a shard's batches are stored in the
// order decap made them, also across a NATS server restart.
func (p *Publisher) fail(it *item, err error) {
	p.mRetries.Inc()
	it.tries++
	if it.tries == 1 || it.tries%20 == 0 {
		p.log.Warn("publish failed, retrying", "subject", it.b.Subject, "tries", it.tries, "err", err)
	}
	p.mu.Lock()
	p.lastErr = err
	if p.cfg.NoStream != nil && errors.Is(err, jetstream.ErrNoStreamResponse) && time.Since(p.lastNoSt) > 5*time.Second {
		p.lastNoSt = time.Now()
		go p.cfg.NoStream()
	}
	p.broken = true
	p.retryAt = time.Now().Add(p.cfg.RetryWait)
	p.mu.Unlock()
	p.requeue(it)
}

// requeue puts it back into the queue at its place in submit order.
func (p *Publisher) requeue(it *item) {
	p.mu.Lock()
	defer p.mu.Unlock()
	it.fut = nil
	i, _ := slices.BinarySearchFunc(p.queue, it.n, func(q *item, n uint64) int { return cmp.Compare(q.n, n) })
	p.queue = slices.Insert(p.queue, i, it)
	p.cond.Broadcast()
}

// Drain waits until everything submitted is published or ctx ends, then
// stops the loops. What is still unpublished at the end is dropped and
// counted (reason shutdown). Submit must not be called after Drain.
func (p *Publisher) Drain(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	for p.bytes > 0 && ctx.Err() == nil {
		p.cond.Wait()
	}
	p.stopping = true
	p.cond.Broadcast()
	p.mu.Unlock()
	close(p.done)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	var left int
	for _, it := range p.queue {
		p.bytes -= it.size
		p.dropLocked(it.b, ReasonShutdown)
		left++
	}
	p.queue = nil
	if left > 0 {
		return errors.New("publish: " + strconv.Itoa(left) + " batches unpublished at shutdown")
	}
	return nil
}
