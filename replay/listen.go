package replay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto"
)

// hub serves one --listen address: it accepts the test system's WebSocket
// connections and pushes the server-to-client messages of the original
// upstream to every one of them.
type hub struct {
	spec listenSpec
	log  *slog.Logger
	m    *metrics
	opts *websocket.AcceptOptions
	ln   net.Listener
	srv  *http.Server

	mu      sync.Mutex
	subs    map[int]*subscriber
	nextID  int
	changed chan struct{} // closed and replaced when a subscriber arrives
	epoch   uint64        // messages finished on this hub (confirm.go)

	// send serialises messages: a WebSocket message must go out whole
	// before the next one starts.
	send chan struct{}
}

type subscriber struct {
	id   int
	c    *websocket.Conn
	done chan struct{}
	read uint64 // hub epoch through which it confirmed reading (under hub.mu)
}

func newHub(spec listenSpec, cfg *Config, log *slog.Logger, m *metrics) (*hub, error) {
	ln, err := cfg.listenOn(spec.Addr)
	if err != nil {
		return nil, err
	}
	h := &hub{
		spec: spec, log: log, m: m, ln: ln,
		opts:    &websocket.AcceptOptions{InsecureSkipVerify: true, CompressionMode: cfg.compress},
		subs:    map[int]*subscriber{},
		changed: make(chan struct{}),
		send:    make(chan struct{}, 1),
	}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

// Addr is the address the hub listens on.
func (h *hub) Addr() string { return h.ln.Addr().String() }

func (h *hub) close() {
	_ = h.srv.Close()
	h.mu.Lock()
	subs := h.snapshotLocked()
	h.mu.Unlock()
	for _, s := range subs {
		_ = s.c.CloseNow()
	}
}

// matches reports whether an original connection belongs to this hub's
// upstream: a path (starting with /) matches the upgrade request path, an
// ip:port the server address, anything else the Host header.
func (h *hub) matches(server, path, host string) bool {
	up := h.spec.Upstream
	switch {
	case strings.HasPrefix(up, "/"):
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		return path == up
	case server != "" && serverMatch(up, server):
		return true
	default:
		if host == "" {
			return false
		}
		if up == host {
			return true
		}
		hn, _, err := net.SplitHostPort(host)
		return err == nil && hn == up
	}
}

// ServeHTTP accepts one test system connection.
func (h *hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, h.opts)
	if err != nil {
		return
	}
	c.SetReadLimit(-1)
	s := &subscriber{c: c, done: make(chan struct{})}
	h.mu.Lock()
	h.nextID++
	s.id = h.nextID
	h.subs[s.id] = s
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	h.m.subscribers.Inc()
	h.log.Info("test system connected", "listen", h.spec.Addr, "upstream", h.spec.Upstream, "remote", r.RemoteAddr)
	// Read (and drop) what the test system sends, so pings and the close
	// handshake are answered.
	for {
		_, rd, err := c.Reader(context.Background())
		if err != nil {
			break
		}
		if _, err := io.Copy(io.Discard, rd); err != nil {
			break
		}
	}
	h.drop(s)
}

func (h *hub) drop(s *subscriber) {
	h.mu.Lock()
	_, ok := h.subs[s.id]
	delete(h.subs, s.id)
	h.mu.Unlock()
	if ok {
		h.m.subscribers.Dec()
		_ = s.c.CloseNow()
	}
}

func (h *hub) snapshotLocked() []*subscriber {
	out := make([]*subscriber, 0, len(h.subs))
	for _, s := range h.subs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// wait blocks until at least one test system is connected.
func (h *hub) wait(ctx context.Context) error {
	for {
		h.mu.Lock()
		n, ch := len(h.subs), h.changed
		h.mu.Unlock()
		if n > 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// hubSink is the sink of one original connection in listen mode.
type hubSink struct {
	h            *hub
	writeTimeout time.Duration
	last         hubSent // the message last finished
}

func (s *hubSink) Name() string { return "listen " + s.h.spec.Addr }

func (s *hubSink) Begin(ctx context.Context, opcode string) (msgWriter, error) {
	if opcode == proto.OpTCP {
		return nil, permanent("raw TCP bytes cannot go to WebSocket test connections")
	}
	select {
	case s.h.send <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.h.mu.Lock()
	subs := s.h.snapshotLocked()
	s.h.mu.Unlock()
	mw := &hubWriter{s: s}
	for _, sub := range subs {
		w, err := sub.c.Writer(ctx, opType(opcode))
		if err != nil {
			s.h.drop(sub)
			continue
		}
		mw.subs = append(mw.subs, sub)
		mw.ws = append(mw.ws, w)
	}
	if len(mw.ws) == 0 {
		<-s.h.send
		return nil, errNoSubscribers
	}
	return mw, nil
}

func (s *hubSink) WriteMessage(ctx context.Context, opcode string, p []byte) error {
	w, err := s.Begin(ctx, opcode)
	if err != nil {
		return err
	}
	if _, err := w.Write(p); err != nil {
		return err
	}
	return w.Close()
}

// hubWriter writes one message to every subscriber present when it began;
// a subscriber that fails is dropped, and the write fails only when none
// is left.
type hubWriter struct {
	s    *hubSink
	subs []*subscriber
	ws   []interface {
		Write([]byte) (int, error)
		Close() error
	}
	done bool
}

func (m *hubWriter) each(op func(i int) error) error {
	for i := 0; i < len(m.ws); {
		sub := m.subs[i]
		t := time.AfterFunc(m.s.writeTimeout, func() { _ = sub.c.CloseNow() })
		err := op(i)
		t.Stop()
		if err != nil {
			m.s.h.drop(sub)
			m.subs = append(m.subs[:i], m.subs[i+1:]...)
			m.ws = append(m.ws[:i], m.ws[i+1:]...)
			continue
		}
		i++
	}
	if len(m.ws) == 0 {
		m.release()
		return errNoSubscribers
	}
	return nil
}

func (m *hubWriter) release() {
	if !m.done {
		m.done = true
		<-m.s.h.send
	}
}

func (m *hubWriter) Write(p []byte) (int, error) {
	if m.done {
		return 0, errNoSubscribers
	}
	err := m.each(func(i int) error { _, err := m.ws[i].Write(p); return err })
	return len(p), err
}

func (m *hubWriter) Close() error {
	if m.done {
		return errNoSubscribers
	}
	err := m.each(func(i int) error { return m.ws[i].Close() })
	if err == nil {
		// Whole at these test connections: what confirms it is one of
		// them reading past this epoch.
		m.s.h.mu.Lock()
		m.s.h.epoch++
		m.s.last = hubSent{epoch: m.s.h.epoch, subs: append([]*subscriber(nil), m.subs...)}
		m.s.h.mu.Unlock()
	}
	m.release()
	return err
}

func (m *hubWriter) Abort(reason string) {
	if m.done {
		// Finished or failed already: its test connections may be
		// carrying another message now.
		return
	}
	// Closing these test connections must not put in doubt what other
	// connections' messages they already read: confirm it first.
	m.s.h.pingAll(min(m.s.writeTimeout, 5*time.Second)) // bounded: the send slot is held
	for _, sub := range m.subs {
		_ = sub.c.Close(websocket.StatusInternalError, truncReason(reason))
		m.s.h.drop(sub)
	}
	m.release()
}

// Confirm pings every test connection; it succeeds when one answers.
func (s *hubSink) Confirm(ctx context.Context) error {
	s.h.mu.Lock()
	subs := s.h.snapshotLocked()
	s.h.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, s.writeTimeout)
	defer cancel()
	ok := false
	for _, sub := range subs {
		if err := sub.c.Ping(cctx); err != nil {
			s.h.drop(sub)
			continue
		}
		ok = true
	}
	if !ok {
		return errNoSubscribers
	}
	return nil
}

// CloseMsg: the upstream closing its connection is not forwarded; the test
// connections stay open for the upstream's other connections.
func (s *hubSink) CloseMsg(int, string) error { return nil }
func (s *hubSink) End(time.Duration)          {}
func (s *hubSink) Kill()                      {}
