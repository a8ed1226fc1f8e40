package afpacket

import (
	"time"

	"github.com/tapline/tapline/decap/internal/stopread"
)

// DefaultStopRead is Config.StopRead when zero.
const DefaultStopRead = stopread.Default

// A stop without loss (decap/internal/stopread): when Run's context ends,
// each socket first refuses new frames (a filter that accepts nothing;
// what is queued stays readable), then its reader reads the queue through
// the normal batch path until it is empty or Config.StopRead has passed,
// then counts and discards what is left (SockStats.StopDropped), then Run
// closes the sockets.

// beginStop starts the stop on every socket. Run calls it when its
// context ends.
func (c *Capture) beginStop() {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed.Load() {
		return
	}
	c.stop.Begin(c.cfg.StopRead)
	// The kernel's drop count before the filter: drops after it are
	// counted as StopRefused, not as drops while capturing.
	for _, s := range c.socks {
		s.mu.Lock()
		s.readKernel()
		s.stopBase, s.stopping = s.kdrops, true
		s.mu.Unlock()
	}
	for _, s := range c.socks {
		if err := stopread.Refuse(s.raw); err != nil {
			c.refuseErrs.Add(1)
		}
		_ = stopread.Wake(s.f)
	}
}

// readQueue hands what is queued on s to handle until the queue is empty
// or deadline passes, then counts and discards the rest.
func (s *sock) readQueue(r *reader, deadline time.Time, handle func(int, []Packet)) error {
	return stopread.Drain(&s.stop, deadline, func() (int, error) { return r.TryRead(s.raw, truncFlag) },
		func(n int) { s.deliver(r, n, handle) })
}

// StopStats are the stop's counters summed over the sockets.
type StopStats struct {
	// Stopped reports whether the drained stop began (Run's context
	// ended).
	Stopped bool
	// Read, Dropped and Refused: sums of SockStats.StopRead, StopDropped
	// and StopRefused.
	Read, Dropped, Refused uint64
	// RefuseErrors counts sockets that could not refuse new frames: they
	// kept queueing until the stop read ended.
	RefuseErrors uint64
}

// StopStats sums the stop counters of every socket.
func (c *Capture) StopStats() StopStats {
	_, ok := c.stop.Get()
	st := StopStats{Stopped: ok, RefuseErrors: c.refuseErrs.Load()}
	for _, s := range c.Stats() {
		st.Read += s.StopRead
		st.Dropped += s.StopDropped
		st.Refused += s.StopRefused
	}
	return st
}
