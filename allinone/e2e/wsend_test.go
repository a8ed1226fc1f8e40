package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"sync"

	"github.com/coder/websocket"
)

// coder/websocket ends a message with io.EOF also when the connection
// itself ends inside it (the peer killed between two frames of a
// fragmented message: "failed to read frame header: EOF" is turned into a
// clean end of message). The test systems must count such a message as
// aborted, never as received: a killed replay cannot send 1011. So every
// connection the tests read from is wrapped in endConn, which remembers a
// failed read of the connection itself; a message whose reader ended
// after such a failure was cut, not completed. A message that completes
// leaves the connection unread past its last frame, so its end never
// follows a failed read.

// endConn is a net.Conn that remembers whether a Read failed other than
// by a deadline (net/http and coder/websocket interrupt reads with
// deadlines; those do not end the connection).
type endConn struct {
	net.Conn
	mu  sync.Mutex
	err error
}

func (c *endConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if ne, ok := err.(net.Error); err != nil && !(ok && ne.Timeout()) {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return n, err
}

// failed returns the first error a Read of the connection gave.
func (c *endConn) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// endConns maps each WebSocket connection the tests read from to its
// wrapped transport connection.
var endConns sync.Map // *websocket.Conn -> *endConn

// watchEnd registers ec as the transport of c.
func watchEnd(c *websocket.Conn, ec *endConn) {
	if ec != nil {
		endConns.Store(c, ec)
	}
}

// cutByEnd reports whether the connection under c failed a read: a
// message whose reader just returned io.EOF was then cut by the end of the
// connection.
func cutByEnd(c *websocket.Conn) error {
	v, ok := endConns.Load(c)
	if !ok {
		return nil
	}
	return v.(*endConn).failed()
}

// endDialer wraps dial so the connection it makes is an endConn, kept in
// *last.
func endDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error), last **endConn) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		ec := &endConn{Conn: c}
		*last = ec
		return ec, nil
	}
}

// endListener makes every accepted connection an endConn.
type endListener struct{ net.Listener }

func (l endListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &endConn{Conn: c}, nil
}

// endConnKey is the request context key of the accepted endConn.
type endConnKey struct{}

// endConnContext is the http.Server ConnContext that makes the accepted
// endConn known to the handler.
func endConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if ec, ok := c.(*endConn); ok {
		return context.WithValue(ctx, endConnKey{}, ec)
	}
	return ctx
}
