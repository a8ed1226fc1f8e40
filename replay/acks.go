package replay

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
)

// ackTracker holds the JetStream messages replay has received but not yet
// acknowledged. Only the reply subject is kept, so a delivered chunk's
// payload can be freed long before its message is acknowledged. It keeps
// held messages alive with in-progress acks so JetStream does not
// redeliver them while replay waits for the test system, and it recognises
// redeliveries of messages still held.
type ackTracker struct {
	nc *nats.Conn
	// before, when set (tests), is called before an acknowledgement is sent.
	before func(seq uint64, reply string)

	mu   sync.Mutex
	held map[uint64]string // stream sequence -> reply subject
}

func newAckTracker(nc *nats.Conn) *ackTracker {
	return &ackTracker{nc: nc, held: map[uint64]string{}}
}

// track registers a received message; it returns false when the sequence
// is already held (a redelivery to ignore).
func (a *ackTracker) track(seq uint64, reply string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.held[seq]; ok {
		return false
	}
	a.held[seq] = reply
	return true
}

// ack acknowledges the message with stream sequence seq.
func (a *ackTracker) ack(seq uint64) {
	a.mu.Lock()
	reply, ok := a.held[seq]
	delete(a.held, seq)
	a.mu.Unlock()
	if ok && reply != "" {
		if a.before != nil {
			a.before(seq, reply)
		}
		_ = a.nc.Publish(reply, proto.AckBody)
	}
}

// holds reports whether seq is held (received and not acknowledged).
func (a *ackTracker) holds(seq uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.held[seq]
	return ok
}

// count is the number of held messages.
func (a *ackTracker) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.held)
}

// keepAlive sends an in-progress ack for every held message each period
// until ctx ends.
func (a *ackTracker) keepAlive(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// In stream order: the held entries' ack waits then expire in
		// that order if this replay dies (see redeliverInOrder).
		a.mu.Lock()
		seqs := slices.Sorted(maps.Keys(a.held))
		replies := make([]string, len(seqs))
		for i, seq := range seqs {
			replies[i] = a.held[seq]
		}
		a.mu.Unlock()
		for _, r := range replies {
			if r != "" {
				_ = a.nc.Publish(r, proto.ProgressBody)
			}
		}
	}
}

// budget bounds the payload bytes held in memory across connections.
type budget struct {
	mu   sync.Mutex
	cond *sync.Cond
	max  int64
	used int64
}

func newBudget(max int64) *budget {
	b := &budget{max: max}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// acquireWithin takes n bytes (capped at max), waiting at most d for room.
func (b *budget) acquireWithin(n int64, d time.Duration) (int64, bool) {
	if got, ok := b.tryAcquire(n); ok {
		return got, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return b.acquire(ctx, n)
}

// acquire blocks until n bytes fit (n is capped at max) or ctx ends.
func (b *budget) acquire(ctx context.Context, n int64) (int64, bool) {
	n = min(n, b.max)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		stop := context.AfterFunc(ctx, func() {
			b.mu.Lock()
			b.cond.Broadcast()
			b.mu.Unlock()
		})
		defer stop()
		for b.used+n > b.max {
			if ctx.Err() != nil {
				return 0, false
			}
			b.cond.Wait()
		}
	}
	b.used += n
	return n, true
}

// release returns n bytes.
func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// ackAll acknowledges every sequence in seqs.
func (a *ackTracker) ackAll(seqs []uint64) {
	for _, s := range seqs {
		a.ack(s)
	}
}

// tryAcquire takes n bytes (capped at max) if they fit now.
func (b *budget) tryAcquire(n int64) (int64, bool) {
	n = min(n, b.max)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return 0, false
	}
	b.used += n
	return n, true
}

// nakAll hands every held message back to JetStream for redelivery.
func (a *ackTracker) nakAll() {
	a.mu.Lock()
	held := a.held
	a.held = map[uint64]string{}
	a.mu.Unlock()
	seqs := make([]uint64, 0, len(held))
	for s := range held {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	for _, s := range seqs {
		if r := held[s]; r != "" {
			_ = a.nc.Publish(r, proto.NakBody)
		}
	}
}
