package udpin

import (
	"errors"
	"os"
	"time"

	"github.com/tapline/tapline/decap/internal/sockfilter"
	"github.com/tapline/tapline/decap/mmsg"
)

// DefaultStopRead is Config.StopRead when zero.
const DefaultStopRead = 2 * time.Second

// discardBound caps the final count-and-discard of a socket's queue. With
// the refusing filter attached the queue only shrinks, so the count ends
// long before; the bound matters only when the filter could not be
// attached and new datagrams keep coming.
const discardBound = time.Second

// A stop without loss: when Run's context ends, each socket first refuses
// new datagrams (a BPF filter that accepts nothing; what is queued stays
// readable), then its reader reads the queue through the normal batch
// path until it is empty or Config.StopRead has passed, then counts and
// discards what is left (Stats.StopDropped), then Run closes the sockets.
// Datagrams refused meanwhile are counted as Stats.StopRefused.

// beginStop starts the stop on every socket. Run calls it when its
// context ends.
func (in *Intake) beginStop() {
	in.closeMu.Lock()
	defer in.closeMu.Unlock()
	if in.closed {
		return
	}
	in.stopDeadline.Store(time.Now().Add(in.cfg.StopRead).UnixNano())
	// The drop counts before the filter: drops after it are refusals.
	p := in.procs
	p.mu.Lock()
	p.refresh()
	for _, s := range in.socks {
		s.stopBase, _, _ = p.sockDrops(s)
		s.stopping = true
	}
	p.mu.Unlock()
	for _, s := range in.socks {
		if err := s.refuse(); err != nil {
			in.log.Warn("udp intake cannot refuse new datagrams at stop: they are read until --stop-read passes",
				"addr", s.listen, "err", err)
		}
		// Wake the reader: its blocking read returns os.ErrDeadlineExceeded
		// and it reads the queue without waiting from then on.
		_ = s.conn.SetReadDeadline(time.Unix(0, 1))
	}
}

// refuse attaches a filter that accepts nothing.
func (s *sock) refuse() error {
	var aerr error
	err := s.raw.Control(func(fd uintptr) {
		aerr = sockfilter.Attach(int(fd), sockfilter.DropAll)
	})
	if err != nil {
		return err
	}
	return aerr
}

// stopping reports whether beginStop ran, and the end of the stop read.
func (in *Intake) stopping() (deadline time.Time, ok bool) {
	ns := in.stopDeadline.Load()
	return time.Unix(0, ns), ns != 0
}

// readQueue hands what is queued on s to handle, batch by batch, until
// the queue is empty or deadline passes; then it counts and discards the
// rest. A socket closed meanwhile (Close) ends it with nil.
func (s *sock) readQueue(r *reader, deadline time.Time, handle func([]Datagram)) error {
	for time.Now().Before(deadline) {
		n, err := r.TryRead(s.raw, 0)
		if err != nil || n == 0 {
			return closedIsNil(err)
		}
		s.stopRead.Add(uint64(n))
		s.deliver(r, n, handle)
	}
	end := time.Now().Add(discardBound)
	for time.Now().Before(end) {
		n, err := r.TryRead(s.raw, 0)
		if err != nil || n == 0 {
			return closedIsNil(err)
		}
		s.stopDropped.Add(uint64(n))
	}
	return nil
}

// closedIsNil is err, or nil when err says the socket was closed.
func closedIsNil(err error) error {
	if mmsg.IsClosed(err) {
		return nil
	}
	return err
}

// isWakeUp reports whether a read error is beginStop waking the reader.
func isWakeUp(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// logStop reports the stop once Run closed the sockets: at WARN when
// datagrams were still queued when the stop read ended.
func (in *Intake) logStop() {
	if _, ok := in.stopping(); !ok {
		return
	}
	st := in.Stats()
	var read uint64
	for _, s := range in.socks {
		read += s.stopRead.Load()
	}
	if st.StopDropped > 0 {
		in.log.Warn("udp intake stopped with datagrams still queued after --stop-read: dropped",
			"dropped", st.StopDropped, "read", read, "refused", st.StopRefused, "stop_read", in.cfg.StopRead)
		return
	}
	in.log.Info("udp intake stopped: queues read empty", "read", read, "refused", st.StopRefused)
}
