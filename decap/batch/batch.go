// Package batch groups inner frames into frame batches, one pending batch
// per subject (VNI and shard), each one pcapng section built by
// framebatch.Writer. A batch is handed on when it reaches the size limit
// or when its first frame is older than the delay, whichever comes first.
// Writers are pooled: the consumer gives each batch back with Release once
// it is published, so steady state allocates nothing.
package batch

import (
	"context"
	"sync"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
)

// Defaults of Config.
const (
	DefaultMaxBytes = 64 << 10
	DefaultDelay    = 5 * time.Millisecond
)

// Batch is one finished frame batch.
type Batch struct {
	// Subject is proto.FramesSubject(VNI, Shard).
	Subject string
	VNI     uint32
	Shard   int
	// W holds the pcapng section: W.Bytes() is the message body, W.Frames()
	// the number of frames.
	W *framebatch.Writer
}

// Config bounds the batches.
type Config struct {
	// MaxBytes is the size at which a batch is handed on (a single larger
	// frame makes a larger batch; frames are never cut).
	MaxBytes int
	// Delay is the longest a frame waits in a batch.
	Delay time.Duration
}

type key struct {
	vni   uint32
	shard int
}

type pending struct {
	subject string
	key     key
	w       *framebatch.Writer
	since   time.Time
	inOpen  bool // listed in Batcher.open
}

// Batcher builds batches and hands them to out. It is safe for concurrent
// use; out is called with the Batcher's lock held, in the order batches of
// one subject were finished, and may block (back-pressure).
type Batcher struct {
	cfg       Config
	out       func(*Batch)
	mu        sync.Mutex
	pend      map[key]*pending
	last      *pending
	pool      sync.Pool
	open      []*pending // subjects whose batch holds frames (may hold flushed ones until the next FlushOlder)
	lastSweep time.Time
}

// MaxSubjects bounds the subjects a Batcher remembers; past it every
// batch is handed on and the table starts afresh (a spray of VNIs cannot
// grow memory without bound).
const MaxSubjects = 1 << 16

// idleAfter is how long a subject's entry is kept without frames.
const idleAfter = 30 * time.Second

// New returns a Batcher handing finished batches to out.
func New(cfg Config, out func(*Batch)) *Batcher {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Delay <= 0 {
		cfg.Delay = DefaultDelay
	}
	b := &Batcher{cfg: cfg, out: out, pend: map[key]*pending{}}
	b.pool.New = func() any {
		return &framebatch.Writer{App: "tapline decap"}
	}
	return b
}

// Add appends a copy of f to the batch of (f.VNI, shard).
func (b *Batcher) Add(f *framebatch.Frame, shard int) {
	b.mu.Lock()
	b.add(f, shard)
	b.mu.Unlock()
}

// AddAll appends copies of frames[i] to the batch of (frames[i].VNI,
// shards[i]) under one lock.
func (b *Batcher) AddAll(frames []*framebatch.Frame, shards []int) {
	b.mu.Lock()
	for i, f := range frames {
		b.add(f, shards[i])
	}
	b.mu.Unlock()
}

func (b *Batcher) add(f *framebatch.Frame, shard int) {
	k := key{f.VNI, shard}
	p := b.last
	if p == nil || p.key != k {
		p = b.pend[k]
		if p == nil {
			if len(b.pend) >= MaxSubjects {
				b.flushAll()
				clear(b.pend)
			}
			p = &pending{subject: proto.FramesSubject(f.VNI, shard), key: k}
			b.pend[k] = p
		}
		b.last = p
	}
	if p.w != nil && p.w.Len()+len(f.Data)+64 > b.cfg.MaxBytes {
		b.flush(p)
	}
	if p.w == nil {
		p.w = b.pool.Get().(*framebatch.Writer)
		p.since = time.Now()
		if !p.inOpen {
			p.inOpen = true
			b.open = append(b.open, p)
		}
	}
	p.w.Add(f)
	if p.w.Len() >= b.cfg.MaxBytes {
		b.flush(p)
	}
}

func (b *Batcher) flush(p *pending) {
	w := p.w
	p.w = nil
	b.out(&Batch{Subject: p.subject, VNI: p.key.vni, Shard: p.key.shard, W: w})
}

// Release returns a published batch's writer to the pool.
func (b *Batcher) Release(bt *Batch) {
	if bt.W != nil {
		bt.W.Reset()
		b.pool.Put(bt.W)
		bt.W = nil
	}
}

// FlushOlder hands on every batch whose first frame was added at or before
// now minus the delay, and forgets subjects idle for a while.
func (b *Batcher) FlushOlder(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := b.open[:0]
	for _, p := range b.open {
		if p.w != nil && now.Sub(p.since) >= b.cfg.Delay {
			b.flush(p)
		}
		if p.w == nil {
			p.inOpen = false
			continue
		}
		keep = append(keep, p)
	}
	clear(b.open[len(keep):])
	b.open = keep
	if now.Sub(b.lastSweep) >= idleAfter {
		b.lastSweep = now
		for k, p := range b.pend {
			if p.w == nil && now.Sub(p.since) >= idleAfter {
				delete(b.pend, k)
				if b.last == p {
					b.last = nil
				}
			}
		}
	}
}

// Flush hands on every pending batch.
func (b *Batcher) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushAll()
}

func (b *Batcher) flushAll() {
	for _, p := range b.open {
		if p.w != nil {
			b.flush(p)
		}
		p.inOpen = false
	}
	clear(b.open)
	b.open = b.open[:0]
	b.last = nil
}

// Run flushes batches older than the delay until ctx ends. It does not
// flush at the end: call Flush.
func (b *Batcher) Run(ctx context.Context) {
	tick := b.cfg.Delay / 2
	if tick < time.Millisecond {
		tick = time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b.FlushOlder(now)
		}
	}
}
