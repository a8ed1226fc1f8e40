package udpin

import (
	"time"

	"github.com/tapline/tapline/decap/internal/stopread"
)

// DefaultStopRead is Config.StopRead when zero.
const DefaultStopRead = stopread.Default

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
	in.stop.Begin(in.cfg.StopRead)
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
		if err := stopread.Refuse(s.raw); err != nil {
			in.log.Warn("udp intake cannot refuse new datagrams at stop: they are read until --stop-read passes",
				"addr", s.listen, "err", err)
		}
		// Wake the reader: its blocking read returns os.ErrDeadlineExceeded
		// and it reads the queue without waiting from then on.
		_ = stopread.Wake(s.conn)
	}
}

// readQueue hands what is queued on s to handle, batch by batch, until
// the queue is empty or deadline passes; then it counts and discards the
// rest (stopread.Drain).
func (s *sock) readQueue(r *reader, deadline time.Time, handle func([]Datagram)) error {
	return stopread.Drain(&s.stop, deadline, func() (int, error) { return r.TryRead(s.raw, 0) },
		func(n int) { s.deliver(r, n, handle) })
}

// logStop reports the stop once Run closed the sockets: at WARN when
// datagrams were still queued when the stop read ended.
func (in *Intake) logStop() {
	if _, ok := in.stop.Get(); !ok {
		return
	}
	st := in.Stats()
	var read uint64
	for _, s := range in.socks {
		read += s.stop.Read.Load()
	}
	if st.StopDropped > 0 {
		in.log.Warn("udp intake stopped with datagrams still queued after --stop-read: dropped",
			"dropped", st.StopDropped, "read", read, "refused", st.StopRefused, "stop_read", in.cfg.StopRead)
		return
	}
	in.log.Info("udp intake stopped: queues read empty", "read", read, "refused", st.StopRefused)
}
