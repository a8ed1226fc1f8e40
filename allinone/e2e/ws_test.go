package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// Msg is one WebSocket message as seen by one side: its type, size and
// SHA-256.
type Msg struct {
	Type websocket.MessageType
	Size int64
	SHA  string
}

func (m Msg) String() string {
	return fmt.Sprintf("%v %d bytes sha256 %s", m.Type, m.Size, m.SHA[:12])
}

// payload returns the content of a message: pseudo-random binary (seeded,
// incompressible) or compressible JSON-like text.
func payload(kind string, seed uint64, size int64) io.Reader {
	switch kind {
	case "text":
		return io.LimitReader(&textGen{seed: seed}, size)
	default:
		return io.LimitReader(rand.NewChaCha8(seedBytes(seed)), size)
	}
}

func seedBytes(seed uint64) (s [32]byte) {
	for i := range 4 {
		for j := range 8 {
			s[i*8+j] = byte((seed + uint64(i)) >> (8 * j))
		}
	}
	return s
}

// textGen writes an endless stream of similar JSON records: highly
// compressible, so permessage-deflate with context takeover back-references
// earlier messages.
type textGen struct {
	seed uint64
	n    uint64
	buf  []byte
}

func (g *textGen) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(g.buf) == 0 {
			g.n++
			g.buf = []byte(`{"type":"quote","symbol":"TAPL","seq":` + strconv.FormatUint(g.n, 10) +
				`,"bid":` + strconv.FormatUint(1000+(g.seed*31+g.n*7)%997, 10) +
				`,"ask":` + strconv.FormatUint(1001+(g.seed*17+g.n*13)%991, 10) + `,"venue":"lab"}` + "\n")
		}
		c := copy(p[n:], g.buf)
		g.buf = g.buf[c:]
		n += c
	}
	return n, nil
}

// send writes one message of size bytes from src as frames of frame bytes
// (coder/websocket writes one frame per Write call).
func send(ctx context.Context, c *websocket.Conn, typ websocket.MessageType, src io.Reader, frame int) (Msg, error) {
	w, err := c.Writer(ctx, typ)
	if err != nil {
		return Msg{}, err
	}
	h := sha256.New()
	buf := make([]byte, frame)
	var n int64
	for {
		k, rerr := io.ReadFull(src, buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				return Msg{}, err
			}
			n += int64(k)
		}
		if rerr != nil {
			break
		}
	}
	if err := w.Close(); err != nil {
		return Msg{}, err
	}
	return Msg{Type: typ, Size: n, SHA: hex.EncodeToString(h.Sum(nil))}, nil
}

// receive reads one message and hashes it.
func receive(ctx context.Context, c *websocket.Conn) (Msg, error) {
	m, _, err := receiveStarted(ctx, c)
	return m, err
}

// receiveStarted is receive that also says whether a message had begun
// when the read failed (an aborted message).
func receiveStarted(ctx context.Context, c *websocket.Conn) (Msg, bool, error) {
	typ, r, err := c.Reader(ctx)
	if err != nil {
		return Msg{}, false, err
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return Msg{}, true, err
	}
	if err := cutByEnd(c); err != nil {
		// coder/websocket ended the message with io.EOF because the
		// connection ended inside it (wsend_test.go).
		return Msg{}, true, fmt.Errorf("message of %d bytes cut by the end of the connection: %w", n, err)
	}
	return Msg{Type: typ, Size: n, SHA: hex.EncodeToString(h.Sum(nil))}, false, nil
}

// Server is a coder/websocket server in a namespace (the external system,
// or a dial-mode test system).
type Server struct {
	Addr netip.AddrPort
	srv  *http.Server

	mu    sync.Mutex
	conns []*ServerConn
	wake  chan struct{}
}

// ServerConn is one accepted connection: the test drives it.
type ServerConn struct {
	C    *websocket.Conn
	Path string
	// Remote is the client's address (ip:port): with the server's, the
	// connection's key in the ledger.
	Remote string
	// Query and Header are the upgrade request's raw query and headers.
	Query  string
	Header http.Header
	// Got collects what the peer sent (read by a background reader when
	// the server was started with read = true).
	mu   sync.Mutex
	got  []Msg
	done chan struct{}
}

// Received returns what the peer sent so far.
func (sc *ServerConn) Received() []Msg {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]Msg(nil), sc.got...)
}

// StartServer listens on addr:0 inside ns. With read, every connection's
// messages are read and recorded; otherwise the test drives the
// connection (it must keep a reader going to see control frames).
func StartServer(t testing.TB, ns string, addr netip.Addr, opts *websocket.AcceptOptions, read bool) *Server {
	t.Helper()
	return startServer(t, ns, addr, opts, read, nil)
}

// startServer is StartServer, serving TLS (wss://) when tc is not nil.
func startServer(t testing.TB, ns string, addr netip.Addr, opts *websocket.AcceptOptions, read bool, tc *tls.Config) *Server {
	t.Helper()
	ln, err := mirrorlab.Listen(ns, "tcp4", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: netip.MustParseAddrPort(ln.Addr().String()), wake: make(chan struct{})}
	s.srv = &http.Server{ConnContext: endConnContext, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, opts)
		if err != nil {
			return
		}
		c.SetReadLimit(-1)
		if ec, ok := r.Context().Value(endConnKey{}).(*endConn); ok {
			watchEnd(c, ec)
		}
		sc := &ServerConn{C: c, Path: r.URL.Path, Remote: r.RemoteAddr, Query: r.URL.RawQuery, Header: r.Header.Clone(), done: make(chan struct{})}
		s.mu.Lock()
		s.conns = append(s.conns, sc)
		close(s.wake)
		s.wake = make(chan struct{})
		s.mu.Unlock()
		if read {
			defer close(sc.done)
			for {
				m, err := receive(context.Background(), c)
				if err != nil {
					return
				}
				sc.mu.Lock()
				sc.got = append(sc.got, m)
				sc.mu.Unlock()
				s.mu.Lock()
				close(s.wake)
				s.wake = make(chan struct{})
				s.mu.Unlock()
			}
		}
		<-r.Context().Done()
	}), ReadHeaderTimeout: 10 * time.Second}
	var sl net.Listener = endListener{ln}
	if tc != nil {
		sl = tls.NewListener(sl, tc)
	}
	go func() { _ = s.srv.Serve(sl) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// Conns returns the accepted connections.
func (s *Server) Conns() []*ServerConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*ServerConn(nil), s.conns...)
}

// Accepted waits until n connections were accepted.
func (s *Server) Accepted(ctx context.Context, n int) ([]*ServerConn, error) {
	for {
		s.mu.Lock()
		conns, wake := append([]*ServerConn(nil), s.conns...), s.wake
		s.mu.Unlock()
		if len(conns) >= n {
			return conns, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return conns, fmt.Errorf("%d of %d connections accepted: %w", len(conns), n, ctx.Err())
		}
	}
}

// Dial opens a WebSocket connection from inside ns.
func Dial(ctx context.Context, ns, url string, opts *websocket.DialOptions) (*websocket.Conn, error) {
	o := websocket.DialOptions{}
	if opts != nil {
		o = *opts
	}
	var ec *endConn
	o.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: endDialer(mirrorlab.DialContext(ns), &ec)}}
	c, _, err := websocket.Dial(ctx, url, &o)
	if err != nil {
		return nil, err
	}
	watchEnd(c, ec)
	c.SetReadLimit(-1)
	return c, nil
}

// Collector reads every message of a connection in the background.
type Collector struct {
	C       *websocket.Conn
	mu      sync.Mutex
	msgs    []Msg
	aborted bool // the read that ended the connection was inside a message
	err     error
	wake    chan struct{}
	done    chan struct{}
}

// Collect starts reading c.
func Collect(c *websocket.Conn) *Collector {
	col := &Collector{C: c, wake: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(col.done)
		for {
			m, started, err := receiveStarted(context.Background(), c)
			col.mu.Lock()
			if err != nil {
				col.err, col.aborted = err, started
			} else {
				col.msgs = append(col.msgs, m)
			}
			close(col.wake)
			col.wake = make(chan struct{})
			col.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return col
}

// Msgs returns what was received so far.
func (col *Collector) Msgs() []Msg {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]Msg(nil), col.msgs...)
}

// Deliveries returns what was received so far, for the ledger.
func (col *Collector) Deliveries() []ledger.Delivery {
	col.mu.Lock()
	defer col.mu.Unlock()
	out := ledgerMsgs(col.msgs)
	if col.aborted {
		out = append(out, ledger.Delivery{Aborted: true})
	}
	return out
}

// Wait waits until n messages arrived (or the connection ended, or ctx).
func (col *Collector) Wait(ctx context.Context, n int) ([]Msg, error) {
	for {
		col.mu.Lock()
		msgs, err, wake := append([]Msg(nil), col.msgs...), col.err, col.wake
		col.mu.Unlock()
		if len(msgs) >= n {
			return msgs, nil
		}
		if err != nil {
			return msgs, fmt.Errorf("connection ended after %d of %d messages: %w", len(msgs), n, err)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return msgs, fmt.Errorf("%d of %d messages: %w", len(msgs), n, ctx.Err())
		}
	}
}

// Done waits until the connection ended and returns the reason.
func (col *Collector) Done(ctx context.Context) error {
	select {
	case <-col.done:
		col.mu.Lock()
		defer col.mu.Unlock()
		return col.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ConnectTestSystem connects a WebSocket client to replay's listen address inside
// the target namespace, retrying until replay accepts.
func ConnectTestSystem(t testing.TB, p *Pipeline, addr string) *Collector {
	t.Helper()
	return Collect(dialTestSystem(t, p, addr))
}

// dialTestSystem connects to replay's listen address and waits until
// replay counts the connection.
func dialTestSystem(t testing.TB, p *Pipeline, addr string) *websocket.Conn {
	t.Helper()
	var c *websocket.Conn
	waitFor(t, 60*time.Second, "replay listen address", func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err = Dial(ctx, p.Lab.Target, "ws://"+addr+"/", nil)
		return err
	})
	t.Cleanup(func() { _ = c.CloseNow() })
	// Wait until replay counts the subscriber, so nothing is pushed before
	// the test system is there.
	waitFor(t, 60*time.Second, "replay subscriber", func() error {
		v, err := p.Metric("replay", "tapline_replay_listen_subscribers")
		if err != nil {
			return err
		}
		if v < 1 {
			return errors.New("no subscriber yet")
		}
		return nil
	})
	return c
}

// Reconnecting is a test system that connects to replay's listen address
// again whenever its connection ends (replay restarted, or replay aborted
// an incomplete message), collecting every message it receives.
type Reconnecting struct {
	mu      sync.Mutex
	msgs    []Msg
	aborted int
	conns   int
}

// ConnectReconnecting starts a reconnecting test system; it stops when
// the test ends.
func ConnectReconnecting(t testing.TB, p *Pipeline, addr string) *Reconnecting {
	t.Helper()
	first := dialTestSystem(t, p, addr)
	r := &Reconnecting{conns: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		c := first
		for {
			for {
				m, started, err := receiveStarted(ctx, c)
				if err != nil {
					if started {
						r.mu.Lock()
						r.aborted++
						r.mu.Unlock()
					}
					break
				}
				r.mu.Lock()
				r.msgs = append(r.msgs, m)
				r.mu.Unlock()
			}
			_ = c.CloseNow()
			for {
				if ctx.Err() != nil {
					return
				}
				dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
				nc, err := Dial(dctx, p.Lab.Target, "ws://"+addr+"/", nil)
				dcancel()
				if err == nil {
					c = nc
					r.mu.Lock()
					r.conns++
					r.mu.Unlock()
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
	return r
}

// Deliveries returns what the test system received so far, for the
// ledger: every complete message and one aborted delivery per message cut
// short.
func (r *Reconnecting) Deliveries() []ledger.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := ledgerMsgs(r.msgs)
	for range r.aborted {
		out = append(out, ledger.Delivery{Aborted: true})
	}
	return out
}

// Msgs returns every message received so far, over all connections.
func (r *Reconnecting) Msgs() []Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Msg(nil), r.msgs...)
}

var _ = net.IPv4len

// OpenFeed connects a production client in lab.Prod to ext's /feed and
// returns what the client receives and the server side of the connection,
// which the test pushes production messages on. The client is closed when
// the test ends.
func OpenFeed(ctx context.Context, t testing.TB, lab *mirrorlab.Lab, ext *Server) (*Collector, *ServerConn) {
	t.Helper()
	c, err := Dial(ctx, lab.Prod, "ws://"+ext.Addr.String()+"/feed", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	prod := Collect(c)
	conns, err := ext.Accepted(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	return prod, conns[0]
}

// OpenFeeds opens n production WebSocket connections to ext, one after
// the other, at path/0 … path/(n-1), with the dial options opts returns
// for each (opts may be nil), and returns their collectors and the
// external system's side of each, in the same order (each is accepted
// before the next is dialled, so the orders agree).
func OpenFeeds(ctx context.Context, t testing.TB, lab *mirrorlab.Lab, ext *Server, path string, n int, opts func(i int) *websocket.DialOptions) ([]*Collector, []*ServerConn) {
	t.Helper()
	cols := make([]*Collector, n)
	var conns []*ServerConn
	for i := range cols {
		var o *websocket.DialOptions
		if opts != nil {
			o = opts(i)
		}
		c, err := Dial(ctx, lab.Prod, fmt.Sprintf("ws://%s%s/%d", ext.Addr, path, i), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		cols[i] = Collect(c)
		if conns, err = ext.Accepted(ctx, i+1); err != nil {
			t.Fatal(err)
		}
	}
	return cols, conns[:n]
}
