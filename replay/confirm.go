package replay

import (
	"context"
	"errors"
	"time"
)

// hubSent is where one message went in listen mode: the test connections
// it was written to whole, and the hub epoch it finished at.
type hubSent struct {
	epoch uint64
	subs  []*subscriber
}

// ping asks one test connection to confirm what it read: on its pong every
// message finished before the ping (the hub epoch then) has been read.
func (h *hub) ping(ctx context.Context, s *subscriber) bool {
	h.mu.Lock()
	e := h.epoch
	h.mu.Unlock()
	if err := s.c.Ping(ctx); err != nil {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			h.drop(s) // failed, or did not answer in time
		}
		return false
	}
	h.mu.Lock()
	s.read = max(s.read, e)
	h.mu.Unlock()
	return true
}

// pingAll confirms what every test connection read so far.
func (h *hub) pingAll(timeout time.Duration) {
	h.mu.Lock()
	subs := h.snapshotLocked()
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, s := range subs {
		h.ping(ctx, s)
	}
}

// confirmSent decides, for each message, whether a test connection it was
// written to confirmed reading it. Only those connections count: a test
// connection accepted later never received it. A message whose every test
// connection closed before confirming is not confirmed: it is in doubt.
func (h *hub) confirmSent(ctx context.Context, timeout time.Duration, sent []hubSent) []bool {
	need := map[*subscriber]uint64{}
	for _, m := range sent {
		for _, s := range m.subs {
			need[s] = max(need[s], m.epoch)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for s, e := range need {
		h.mu.Lock()
		read := s.read
		h.mu.Unlock()
		if read < e {
			h.ping(cctx, s)
		}
	}
	ok := make([]bool, len(sent))
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, m := range sent {
		for _, s := range m.subs {
			if s.read >= m.epoch {
				ok[i] = true
				break
			}
		}
	}
	return ok
}

// hubSents are the destinations of the first n unconfirmed messages.
func (w *worker) hubSents(n int) []hubSent {
	out := make([]hubSent, n)
	for i, m := range w.unconfirmed[:n] {
		out[i] = m.sent
	}
	return out
}

// reasonInDoubtConn is the reason of a listen-mode message in doubt.
const reasonInDoubtConn = "in doubt: every test connection it was written to closed before confirming it; it may or may not have been received, and is not sent again"
