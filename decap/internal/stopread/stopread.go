// Package stopread is the stop without loss that decap's socket readers
// share (the UDP intake and the AF_PACKET capture): when the reader is
// told to stop, its socket first refuses new packets (a filter that
// accepts nothing; what is already queued stays readable), the reader is
// woken from its blocking read, then reads the queue without waiting
// through its normal batch path until the queue is empty or the stop read
// has passed, and finally counts and discards what is left.
package stopread

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapline/tapline/decap/internal/sockfilter"
	"github.com/tapline/tapline/decap/mmsg"
)

// Default is the stop read of a reader whose configuration names none.
const Default = 2 * time.Second

// Deadline is when a reader's stop read ends. The zero value is a stop
// not begun; safe for concurrent use.
type Deadline struct{ ns atomic.Int64 }

// Begin starts the stop: it ends read from now.
func (d *Deadline) Begin(read time.Duration) { d.ns.Store(time.Now().Add(read).UnixNano()) }

// Get returns the end of the stop read; ok is false until Begin.
func (d *Deadline) Get() (end time.Time, ok bool) {
	ns := d.ns.Load()
	return time.Unix(0, ns), ns != 0
}

// discardBound caps the final count-and-discard of a queue. With the
// refusing filter attached the queue only shrinks, so the count ends long
// before; the bound matters only when the filter could not be attached
// and new packets keep coming.
const discardBound = time.Second

// Counts are one socket's stop counters.
type Counts struct {
	// Read counts packets read from the queue during the stop read.
	Read atomic.Uint64
	// Dropped counts packets still queued when the stop read ended,
	// discarded unread.
	Dropped atomic.Uint64
}

// Refuse attaches a filter that accepts nothing to raw's socket: the
// kernel queues no new packet, what is queued stays readable.
func Refuse(raw syscall.RawConn) error {
	var aerr error
	err := raw.Control(func(fd uintptr) {
		aerr = sockfilter.Attach(int(fd), sockfilter.DropAll)
	})
	if err != nil {
		return err
	}
	return aerr
}

// Wake makes a blocking read on f return at once, with an error IsWakeUp
// accepts: it sets a read deadline in the past.
func Wake(f interface{ SetReadDeadline(time.Time) error }) error {
	return f.SetReadDeadline(time.Unix(0, 1))
}

// IsWakeUp reports whether a read error is Wake waking the reader.
func IsWakeUp(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// Drain reads the queue with tryRead (one batch, without waiting: the
// number of packets read, 0 when the queue is empty), handing each batch
// to deliver, until the queue is empty or deadline passes; then it counts
// and discards the rest. A batch being delivered when deadline passes is
// delivered whole. A socket closed meanwhile ends it with nil.
func Drain(c *Counts, deadline time.Time, tryRead func() (int, error), deliver func(n int)) error {
	for time.Now().Before(deadline) {
		n, err := tryRead()
		if err != nil || n == 0 {
			return closedIsNil(err)
		}
		c.Read.Add(uint64(n))
		deliver(n)
	}
	end := time.Now().Add(discardBound)
	for time.Now().Before(end) {
		n, err := tryRead()
		if err != nil || n == 0 {
			return closedIsNil(err)
		}
		c.Dropped.Add(uint64(n))
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
