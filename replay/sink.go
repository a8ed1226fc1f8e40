package replay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/redact"
	"github.com/tapline/tapline/replay/compare"
)

// msgWriter writes one message to the test system as it arrives.
type msgWriter interface {
	io.Writer
	// Close finishes the message.
	Close() error
	// Abort makes sure the test system never receives the partly written
	// message as complete (it closes the connection with an error status).
	Abort(reason string)
}

// sink is where one replayed connection's messages go: a WebSocket or TCP
// connection to the test system (dial mode) or the test connections
// accepted on a listen address (listen mode).
type sink interface {
	// Begin starts a message with the given opcode (text, binary, tcp).
	Begin(ctx context.Context, opcode string) (msgWriter, error)
	// WriteMessage writes a whole message at once (one frame).
	WriteMessage(ctx context.Context, opcode string, p []byte) error
	// Confirm returns once the test system has read everything written so
	// far (a WebSocket ping answered by a pong), or an error.
	Confirm(ctx context.Context) error
	// CloseMsg replays a close message; the connection ends.
	CloseMsg(code int, reason string) error
	// End finishes the connection gracefully, waiting at most wait for the
	// test system's last responses.
	End(wait time.Duration)
	// Kill drops the connection at once.
	Kill()
	// Name describes the sink in logs and results.
	Name() string
}

var errNoSubscribers = errors.New("no test system connected")

// permanentError is a delivery error retrying cannot cure: the message is
// of a kind the target can never take.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// permanent returns a permanent delivery error.
func permanent(format string, args ...any) error {
	return &permanentError{msg: fmt.Sprintf(format, args...)}
}

// isPermanent reports whether err (or an error it wraps) is permanent.
func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// opType maps a text/binary opcode to the WebSocket message type.
func opType(op string) websocket.MessageType {
	if op == proto.OpText {
		return websocket.MessageText
	}
	return websocket.MessageBinary
}

func opName(t websocket.MessageType) string {
	if t == websocket.MessageText {
		return proto.OpText
	}
	return proto.OpBinary
}

// hopHeaders are never forwarded from the original upgrade request: the
// WebSocket library sets them for the new connection.
var hopHeaders = map[string]bool{
	"Host": true, "Connection": true, "Upgrade": true, "Content-Length": true,
	"Sec-Websocket-Key": true, "Sec-Websocket-Version": true, "Sec-Websocket-Extensions": true,
	"Sec-Websocket-Protocol": true, "Sec-Websocket-Accept": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Keep-Alive": true, "Proxy-Connection": true,
}

// handshake computes the dial URL, headers, Host and subprotocols of the
// connection to the test system for an original connection.
func (c *Config) handshake(open *proto.OpenEvent) (u string, h http.Header, host string, subprotos []string) {
	t := *c.wsTarget
	p := c.PathOverride
	if p == "" && open != nil {
		p = open.Path
		if !c.ForwardCreds {
			// Query parameters named like credentials (access_token,
			// api_key, …) stay behind like the credential headers.
			p, _ = redact.StripQuery(p)
		}
	}
	if p != "" {
		if pu, err := url.Parse(p); err == nil {
			t.Path, t.RawPath, t.RawQuery = pu.Path, pu.RawPath, pu.RawQuery
		}
	}
	h = http.Header{}
	if c.ForwardHdrs && open != nil {
		for k, v := range open.Headers {
			k = http.CanonicalHeaderKey(k)
			if !hopHeaders[k] && (c.ForwardCreds || !isCredentialHeader(k)) {
				h.Set(k, v)
			}
		}
	}
	for _, d := range c.DropHeaders {
		h.Del(d)
	}
	for k, vs := range c.setHdr {
		h[http.CanonicalHeaderKey(k)] = vs
	}
	host = h.Get("Host")
	h.Del("Host")
	sp := c.Subprotocol
	if sp == "" && open != nil {
		sp = open.Subprotocol
	}
	if sp != "" && sp != "-" {
		for _, s := range strings.Split(sp, ",") {
			if s = strings.TrimSpace(s); s != "" {
				subprotos = append(subprotos, s)
			}
		}
	}
	return t.String(), h, host, subprotos
}

// credentialHeaders are the production credentials not forwarded unless
// --forward-credentials.
var credentialHeaders = map[string]bool{"Authorization": true, "Proxy-Authorization": true, "Cookie": true}

// isCredentialHeader: the headers above, and every header whose name looks
// like a credential (X-Api-Key, X-Auth-Token, X-Session-Id, … and
// --redact-names; see proto/redact), which API keys travel in as often as
// in Authorization.
func isCredentialHeader(k string) bool {
	return credentialHeaders[k] || redact.SecretName(k)
}

// httpClient is the client used for ws/wss handshakes.
func (c *Config) httpClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = dialCoalescing(tr.DialContext)
	if c.TLSInsecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // operator's choice for test systems
	}
	return &http.Client{Transport: tr, CheckRedirect: c.checkRedirect}
}

// maxRedirects is how many redirects --follow-redirects follows.
const maxRedirects = 10

// checkRedirect refuses redirects unless --follow-redirects: the 3xx
// response is then what the dial gets, and it fails with its status.
func (c *Config) checkRedirect(_ *http.Request, via []*http.Request) error {
	if !c.FollowRedirects {
		return http.ErrUseLastResponse
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	return nil
}

// wsSink is a WebSocket connection to the test system.
type wsSink struct {
	c            *websocket.Conn
	url          string
	writeTimeout time.Duration
	readerDone   chan struct{}
	sinkOnly     bool       // the test system says it never answers (SinkHeader)
	co           *coalescer // the connection under c (nil: not known)
}

// dialWS connects to the test system and starts reading its responses;
// onResp (may be nil) receives each response message.
func dialWS(ctx context.Context, cfg *Config, client *http.Client, open *proto.OpenEvent, onResp func(compare.Message)) (*wsSink, error) {
	u, h, host, subs := cfg.handshake(open)
	var co *coalescer
	dctx, cancel := context.WithTimeout(withCoalescer(ctx, &co), cfg.DialTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPClient:      client,
		HTTPHeader:      h,
		Host:            host,
		Subprotocols:    subs,
		CompressionMode: cfg.compress,
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: HTTP %d: %w", u, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	c.SetReadLimit(-1) // responses are read as streams; the comparer caps what it keeps
	s := &wsSink{c: c, url: u, writeTimeout: cfg.WriteTimeout, readerDone: make(chan struct{}), co: co}
	s.sinkOnly = resp != nil && resp.Header.Get(SinkHeader) == "sink"
	go s.read(cfg.CompareMax, onResp)
	return s, nil
}

func (s *wsSink) read(max int, onResp func(compare.Message)) {
	defer close(s.readerDone)
	for {
		typ, r, err := s.c.Reader(context.Background())
		if err != nil {
			return
		}
		if onResp == nil {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
			continue
		}
		b := compare.NewBuilder(0, opName(typ), max)
		if _, err := io.Copy(b, r); err != nil {
			return
		}
		onResp(b.Done())
	}
}

func (s *wsSink) Name() string { return s.url }

func (s *wsSink) Begin(ctx context.Context, opcode string) (msgWriter, error) {
	if opcode == proto.OpTCP {
		return nil, permanent("raw TCP bytes cannot go to a WebSocket target")
	}
	// The writer keeps the context of Writer for the whole message, which
	// may take long to arrive: use ctx, and bound each write separately.
	w, err := s.c.Writer(ctx, opType(opcode))
	if err != nil {
		return nil, err
	}
	return &wsMsgWriter{s: s, w: w}, nil
}

func (s *wsSink) WriteMessage(ctx context.Context, opcode string, p []byte) error {
	if opcode == proto.OpTCP {
		return permanent("raw TCP bytes cannot go to a WebSocket target")
	}
	return s.guard(func() error { return s.c.Write(ctx, opType(opcode), p) })
}

type wsMsgWriter struct {
	s *wsSink
	w io.WriteCloser
}

// guard closes the connection when op takes longer than the write timeout,
// so a stuck test system turns into an error instead of a hang.
func (s *wsSink) guard(op func() error) error {
	t := time.AfterFunc(s.writeTimeout, func() { _ = s.c.CloseNow() })
	err := op()
	if !t.Stop() && err == nil {
		err = fmt.Errorf("write to %s timed out", s.url)
	}
	return err
}

func (m *wsMsgWriter) Write(p []byte) (int, error) {
	var n int
	err := m.s.guard(func() (err error) { n, err = m.w.Write(p); return })
	return n, err
}

func (m *wsMsgWriter) Close() error { return m.s.guard(m.w.Close) }

func (m *wsMsgWriter) Abort(reason string) {
	m.s.release()
	_ = m.s.c.Close(websocket.StatusInternalError, truncReason(reason))
	_ = m.s.c.CloseNow()
}

func (s *wsSink) Confirm(ctx context.Context) error {
	if s.co != nil {
		// Everything written so far goes out now, the ping behind it.
		if err := s.guard(s.co.confirming); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, s.writeTimeout)
	defer cancel()
	return s.c.Ping(cctx)
}

// release writes what the coalescer holds (a close frame must not wait
// behind it); a failure shows in the write that follows.
func (s *wsSink) release() {
	if s.co != nil {
		_ = s.guard(s.co.release)
	}
}

func (s *wsSink) CloseMsg(code int, reason string) error {
	if code == 0 || code == int(websocket.StatusNoStatusRcvd) || code == int(websocket.StatusAbnormalClosure) {
		code = int(websocket.StatusNormalClosure)
	}
	s.release()
	err := s.c.Close(websocket.StatusCode(code), truncReason(reason))
	var ce websocket.CloseError
	if errors.As(err, &ce) || errors.Is(err, net.ErrClosed) {
		err = nil // the peer answered the close (perhaps with its own code)
	}
	return err
}

func (s *wsSink) End(wait time.Duration) {
	s.release()
	done := make(chan struct{})
	go func() {
		_ = s.c.Close(websocket.StatusNormalClosure, "")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(wait):
		_ = s.c.CloseNow()
	}
	select {
	case <-s.readerDone:
	case <-time.After(wait):
	}
}

func (s *wsSink) Kill() { _ = s.c.CloseNow() }

func truncReason(r string) string {
	if len(r) > 120 {
		r = r[:120]
	}
	return r
}

// tcpSink is a raw TCP connection to the test system.
type tcpSink struct {
	c            *net.TCPConn
	addr         string
	writeTimeout time.Duration
	readerDone   chan struct{}
	mu           sync.Mutex
	got          *compare.Builder
}

func dialTCP(ctx context.Context, cfg *Config, keepResponses bool) (*tcpSink, error) {
	d := net.Dialer{Timeout: cfg.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", cfg.tcpTarget)
	if err != nil {
		return nil, fmt.Errorf("dial tcp://%s: %w", cfg.tcpTarget, err)
	}
	s := &tcpSink{c: c.(*net.TCPConn), addr: "tcp://" + cfg.tcpTarget, writeTimeout: cfg.WriteTimeout, readerDone: make(chan struct{})}
	if keepResponses {
		s.got = compare.NewBuilder(0, proto.OpTCP, cfg.CompareMax)
	}
	go func() {
		defer close(s.readerDone)
		buf := make([]byte, 32<<10)
		for {
			n, err := s.c.Read(buf)
			if n > 0 && s.got != nil {
				s.mu.Lock()
				s.got.Write(buf[:n])
				s.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	return s, nil
}

func (s *tcpSink) Name() string { return s.addr }

func (s *tcpSink) Begin(_ context.Context, opcode string) (msgWriter, error) {
	if opcode != proto.OpTCP {
		return nil, permanent("a WebSocket %s message cannot go to a tcp target", opcode)
	}
	return tcpWriter{s}, nil
}

func (s *tcpSink) WriteMessage(ctx context.Context, opcode string, p []byte) error {
	w, err := s.Begin(ctx, opcode)
	if err == nil {
		_, err = w.Write(p)
	}
	return err
}

type tcpWriter struct{ s *tcpSink }

func (w tcpWriter) Write(p []byte) (int, error) {
	_ = w.s.c.SetWriteDeadline(time.Now().Add(w.s.writeTimeout))
	return w.s.c.Write(p)
}
func (w tcpWriter) Close() error { return nil }
func (w tcpWriter) Abort(string) {
	_ = w.s.c.SetLinger(0)
	_ = w.s.c.Close()
}

// Confirm cannot prove the peer read the bytes; it checks the connection
// is still open.
func (s *tcpSink) Confirm(context.Context) error {
	select {
	case <-s.readerDone:
		return fmt.Errorf("%s closed by the test system", s.addr)
	default:
		return nil
	}
}

func (s *tcpSink) CloseMsg(int, string) error { return nil }

func (s *tcpSink) End(wait time.Duration) {
	_ = s.c.CloseWrite()
	select {
	case <-s.readerDone:
	case <-time.After(wait):
	}
	_ = s.c.Close()
}

func (s *tcpSink) Kill() { _ = s.c.Close() }

// responses returns what the test system sent on the connection.
func (s *tcpSink) responses() *compare.Message {
	if s.got == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.got.Done()
	return &m
}
