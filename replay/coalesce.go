package replay

import (
	"context"
	"net"
	"sync"

	"github.com/tapline/tapline/replay/pace"
)

// coalesceMax bounds what a held connection buffers before it writes: at
// most this much waits in memory per connection.
const coalesceMax = 64 << 10

// coalescer is the TCP (or TLS-carrying) connection under a WebSocket to
// the test system. coder/websocket writes every frame to it with its own
// write (one system call per message); while the worker holds it (hold),
// the frames it writes go into one buffer instead, written with one
// system call when the worker releases it — its queue is empty, or it is
// about to wait — or when the buffer is full. The bytes keep their order,
// and a confirmation's ping follows them, so a message is confirmed only
// once its bytes were written to the socket: a confirmation writes what
// is buffered and lets the next write (normally its ping) go out at once
// (pingNext).
type coalescer struct {
	net.Conn
	mu       sync.Mutex
	held     bool
	pingNext bool // the next write goes out at once
	buf      []byte
	err      error // a failed write: every later write fails
}

// Write buffers p while held, else writes what is buffered and p (one
// writev).
func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.held && !c.pingNext && len(c.buf)+len(p) <= coalesceMax {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	c.pingNext = false
	if len(c.buf) == 0 {
		n, err := c.Conn.Write(p)
		if err != nil {
			c.err = err
		}
		return n, err
	}
	bufs := net.Buffers{c.buf, p}
	_, err := bufs.WriteTo(c.Conn)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
		return 0, err
	}
	return len(p), nil
}

// flushLocked writes the buffer (c.mu held).
func (c *coalescer) flushLocked() error {
	if len(c.buf) == 0 || c.err != nil {
		return c.err
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
	}
	return err
}

// hold makes writes wait in the buffer until release.
func (c *coalescer) hold() {
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
}

// release writes what is buffered and lets later writes go out at once.
func (c *coalescer) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	return c.flushLocked()
}

// confirming writes what is buffered and lets the next write go out at
// once, held or not: the ping of a confirmation running beside the worker
// should not wait in the buffer. (Should another write come first, the
// ping waits at most until the worker's next release or a full buffer;
// the worker releases before confirming itself.)
func (c *coalescer) confirming() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pingNext = true
	return c.flushLocked()
}

// coalesceKey carries, in a dial's context, where dialCoalescing puts the
// connection it dialled.
type coalesceKey struct{}

// dialCoalescing wraps a transport's dial function: a dial whose context
// asks for it (withCoalescer) gets its connection wrapped in a coalescer.
func dialCoalescing(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		slot, _ := ctx.Value(coalesceKey{}).(**coalescer)
		if slot == nil {
			return c, nil
		}
		co := &coalescer{Conn: c}
		*slot = co
		return co, nil
	}
}

// withCoalescer returns a context whose dial puts its coalescer in *slot
// (left nil when the handshake did not dial, e.g. reused a connection).
func withCoalescer(ctx context.Context, slot **coalescer) context.Context {
	return context.WithValue(ctx, coalesceKey{}, slot)
}

// holdWrites lets the frames the worker writes next wait in the
// connection's buffer (see coalescer), when replay is unpaced: a paced
// worker waits between messages, and a message must not wait with it.
func (w *worker) holdWrites() {
	s, ok := w.sink.(*wsSink)
	if !ok || s.co == nil {
		return
	}
	if p := w.r.cfg.pace; p.Mode != pace.Fast || p.RateMsgs > 0 || p.RateBytes > 0 {
		return
	}
	s.co.hold()
}

// releaseWrites writes what holdWrites let wait, before the worker waits
// for anything. A failed write is kept by the coalescer and returned by
// the next write or confirmation, which then take the usual way of a
// failed write (reconnect, write the unconfirmed messages again).
func (w *worker) releaseWrites() {
	if s, ok := w.sink.(*wsSink); ok {
		s.release()
	}
}
