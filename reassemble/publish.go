package reassemble

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pubItem is one entry on its way to the messages stream and the batch
// whose frames produced it.
type pubItem struct {
	msg *nats.Msg
	b   *batch
	fut jetstream.PubAckFuture
	n   uint64 // queue number: the entry's place among all of the shard's
	// acked says the entry is stored (its future's value was read).
	acked bool
	// conn, key and cont place the entry in its connection's order (see
	// pubconn.go): connection id, message (dir/seq) of a data chunk, and
	// whether it is a chunk after its message's first.
	conn, key string
	cont      bool
}

// publisher publishes a shard's entries asynchronously, in order, with a
// bounded number in flight. When a publish fails, it and every later one
// are sent again in the same order: JetStream drops the copies already
// stored by their Nats-Msg-Id, so the stream keeps each connection's
// entries in order and once. A batch is released (and acknowledged once
// nothing else holds it) when the entries it produced are stored.
type publisher struct {
	js       jetstream.JetStream
	log      *slog.Logger
	max      int
	maxBytes int
	// maxConn bounds one connection's chunks of a message in flight (see
	// pubconn.go).
	maxConn  int
	flight   map[string]*connFlight
	next     uint64 // queue number of the next entry
	bytes    int    // payload bytes queued
	q        []pubItem
	release  func(*batch)
	onStored func()
	onRetry  func()
	// connected reports whether the NATS connection is up (nil: always).
	connected func() bool
	unsent    bool // a queued entry was not taken by the client: resend
	// sendErr is why the client last refused an entry (logged, and
	// returned when resending cannot help: errMaxPayload).
	sendErr error
	// retryAt is the earliest time of the next resend by repair, and
	// retryGap the backoff between resends that keep failing.
	retryAt  time.Time
	retryGap time.Duration
	// retryCtx bounds retries; set to a context with a deadline during
	// shutdown.
	retryCtx context.Context
}

// publish queues m, produced by batch b, and waits while too many are in
// flight.
func (p *publisher) publish(m *nats.Msg, b *batch) error {
	if err := p.repair(true); err != nil {
		return err
	}
	if b != nil {
		b.refs++
	}
	it := pubItem{msg: m, b: b, n: p.next}
	p.next++
	orderKeys(&it, m)
	p.q = append(p.q, it)
	p.dispatch(len(p.q) - 1)
	p.bytes += len(m.Data)
	for len(p.q) >= p.max || (p.bytes > p.maxBytes && len(p.q) > 1) {
		if err := p.waitHead(); err != nil {
			return err
		}
	}
	return nil
}

// poll pops the publishes already acknowledged, without waiting, and
// resends the queue when one failed and the connection is up.
func (p *publisher) poll() {
	p.popAcked()
	if p.connected == nil || p.connected() {
		_ = p.repair(false)
	}
}

// popAcked pops the publishes already acknowledged, without waiting.
func (p *publisher) popAcked() {
	for len(p.q) > 0 && p.storedNow(0) {
		p.pop()
	}
}

// flush waits until every queued publish is stored.
func (p *publisher) flush() error {
	for len(p.q) > 0 {
		if err := p.waitHead(); err != nil {
			return err
		}
	}
	return nil
}

func (p *publisher) pop() {
	it := p.q[0]
	p.q[0] = pubItem{}
	p.q = p.q[1:]
	if len(p.q) == 0 {
		p.q = p.q[:0:0]
	}
	p.bytes -= len(it.msg.Data)
	p.forget(&it)
	p.onStored()
	if it.b != nil {
		p.release(it.b)
	}
}

// broken reports whether a queued publish failed: one was not sent, or
// the oldest not acknowledged has an error (the client fails every
// pending acknowledgement at once when the connection drops, the oldest
// with them). A failure read here is kept as a nil future.
func (p *publisher) broken() bool {
	p.popAcked()
	if p.unsent {
		return true
	}
	if len(p.q) == 0 {
		return false
	}
	f := p.q[0].fut
	if f == nil {
		return true
	}
	select {
	case <-f.Err():
		p.q[0].fut = nil
		return true
	default:
		return false
	}
}

// repair resends the whole queue in order, once the connection is up,
// when a queued publish failed — before anything newer is sent. Sending
// new entries first (they are stored after a reconnect while the failed
// earlier ones are not) stored a connection's entries out of order after
// a NATS server restart (issue 10): equal bytes, different order.
//
// Resends back off while they keep failing; block says to wait for the
// next one (before a new entry is sent) rather than leave it for later.
func (p *publisher) repair(block bool) error {
	if !p.broken() {
		p.retryGap = 0
		return nil
	}
	if len(p.q) == 0 {
		p.unsent = false
		return nil
	}
	if d := time.Until(p.retryAt); d > 0 {
		if !block {
			return nil
		}
		select {
		case <-time.After(d):
		case <-p.retryCtx.Done():
			return p.retryCtx.Err()
		}
	}
	backoff := 50 * time.Millisecond
	for p.connected != nil && !p.connected() {
		select {
		case <-time.After(backoff):
		case <-p.retryCtx.Done():
			return p.retryCtx.Err()
		}
		backoff = min(2*backoff, time.Second)
	}
	p.retryGap = min(max(2*p.retryGap, 50*time.Millisecond), 2*time.Second)
	p.retryAt = time.Now().Add(p.retryGap)
	p.onRetry()
	if err := p.permanentSendErr(); err != nil {
		return err
	}
	p.log.Warn("publish failed; resending unacknowledged entries in order", "queued", len(p.q), "subject", p.q[0].msg.Subject, "err", p.sendErr)
	p.sendErr = nil
	p.resendAll()
	return nil
}

// send publishes queue entry i; an error (the client did not take it)
// marks the queue for a resend.
func (p *publisher) send(i int) {
	var err error
	if p.q[i].fut, err = p.js.PublishMsgAsync(p.q[i].msg); err != nil {
		p.q[i].fut, p.unsent, p.sendErr = nil, true, err
	}
}

// permanentSendErr returns the refusal resending cannot fix: an entry
// larger than the server's max_payload would be refused forever and
// wedge the shard.
func (p *publisher) permanentSendErr() error {
	if errors.Is(p.sendErr, nats.ErrMaxPayload) {
		return fmt.Errorf("publish to %s: %w: the NATS server's max_payload is below an entry of this shard; raise max_payload (e.g. max_payload: 2MB) in the server configuration", p.q[0].msg.Subject, p.sendErr)
	}
	return nil
}

// waitHead waits for the oldest publish; on failure it resends the whole
// queue in order, with backoff, until the head is stored or the retry
// context ends.
func (p *publisher) waitHead() error {
	backoff := 50 * time.Millisecond
	for {
		if p.q[0].acked {
			p.pop()
			return nil
		}
		f := p.q[0].fut
		var err error
		if f == nil {
			if perr := p.permanentSendErr(); perr != nil {
				return perr
			}
			err = errors.New("publish not sent")
			if p.sendErr != nil {
				err = fmt.Errorf("publish not sent: %w", p.sendErr)
			}
		} else {
			select {
			case <-f.Ok():
				p.pop()
				return nil
			case err = <-f.Err():
			case <-p.retryCtx.Done():
				return p.retryCtx.Err()
			}
		}
		p.onRetry()
		p.logFailure(err)
		select {
		case <-time.After(backoff):
		case <-p.retryCtx.Done():
			return p.retryCtx.Err()
		}
		backoff = min(2*backoff, 2*time.Second)
		p.sendErr = nil
		p.resendAll()
	}
}
