package replay

import (
	"context"
	"crypto/rand"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxResultRetries bounds the results kept for a resend; past it new
// results wait (backpressure on the workers) rather than grow memory.
const maxResultRetries = 4096

// resultRetries holds results whose publish failed (no stream leader:
// "no response from stream", or an acknowledgement that timed out), to be
// sent again until stored. Each result carries its own Nats-Msg-Id, so a
// resend of one that was stored after all is dropped by JetStream. Before,
// a failed result was only logged: with the results stream's leader
// killed, TAPLINE_RESULTS lacked the results of messages the test system
// had received.
type resultRetries struct {
	mu      sync.Mutex
	msgs    []*nats.Msg
	stopped bool
	wake    chan struct{}
}

// failed keeps msg for a resend (called by the client's error handler).
func (r *resultRetries) failed(msg *nats.Msg) {
	r.mu.Lock()
	r.msgs = append(r.msgs, msg)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// len is how many results wait for a resend.
func (r *resultRetries) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// waitRoom waits while the retry list is full (not after stop).
func (r *resultRetries) waitRoom() {
	for {
		r.mu.Lock()
		full := len(r.msgs) >= maxResultRetries && !r.stopped
		r.mu.Unlock()
		if !full {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run resends failed results with backoff until ctx ends.
func (p *resultsPub) resendFailed(ctx context.Context) {
	r := p.retry
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			r.stopped = true
			r.mu.Unlock()
			return
		case <-r.wake:
		case <-time.After(backoff):
		}
		r.mu.Lock()
		msgs := r.msgs
		r.msgs = nil
		r.mu.Unlock()
		if len(msgs) == 0 {
			backoff = 100 * time.Millisecond
			continue
		}
		// Give the stream a moment to elect a leader before resending.
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
		for i, m := range msgs {
			if _, err := p.js.PublishMsgAsync(m); err != nil {
				r.mu.Lock()
				r.msgs = append(r.msgs, msgs[i:]...)
				r.mu.Unlock()
				break
			}
		}
	}
}

// newResultsPub publishes results asynchronously on a JetStream context
// of its own, whose failed publishes are kept for resendFailed.
func newResultsPub(nc *nats.Conn, level string, subj func(vni uint32, shard int) string, log *slog.Logger, m *metrics) (*resultsPub, error) {
	p := &resultsPub{level: level, subj: subj, log: log, m: m,
		id: "replay-" + rand.Text(), retry: &resultRetries{wake: make(chan struct{}, 1)}}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(resultAckTimeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, msg *nats.Msg, err error) {
			m.errors.WithLabelValues("results").Inc()
			log.Warn("result not stored; sent again", "subject", msg.Subject, "err", err)
			p.retry.failed(msg)
		}))
	if err != nil {
		return nil, err
	}
	p.js = js
	return p, nil
}

// resultAckTimeout is how long a result's acknowledgement may take before
// the result is sent again (without it, a publish the stream never got
// stayed pending for ever).
var resultAckTimeout = 10 * time.Second
