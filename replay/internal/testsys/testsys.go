// Package testsys provides the real test systems replay's tests deliver to:
// a WebSocket server (coder/websocket) that records every message it reads
// with its SHA-256 and can be killed and restarted on the same address, a
// WebSocket client for listen mode, and a raw TCP server.
package testsys

import (
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Record is one message the test system read.
type Record struct {
	ConnN       int    // which accepted connection, from 1
	Path        string // request path of that connection
	Subprotocol string
	Header      http.Header
	Type        websocket.MessageType
	Size        int64
	SHA256      [32]byte
	Payload     []byte // the first KeepBytes bytes
	At          time.Time
}

// KeepBytes is how much of each payload a Record keeps.
const KeepBytes = 64 << 10

// Responder answers a message the server read; ok false sends nothing.
type Responder func(path string, typ websocket.MessageType, payload []byte) (websocket.MessageType, []byte, bool)

// WSServer is a WebSocket test system on 127.0.0.1.
type WSServer struct {
	Addr string // host:port, stable across Restart
	// Respond, when set, answers each message (payloads over KeepBytes are
	// passed truncated).
	Respond   Respond
	Subprotos []string
	Compress  websocket.CompressionMode

	mu     sync.Mutex
	recs   []Record
	conns  map[*websocket.Conn]bool
	closes []websocket.StatusCode
	n      int
	ln     net.Listener
	srv    *http.Server
	cond   *sync.Cond
}

// Respond is the Responder type's field name alias for readability.
type Respond = Responder

// NewWS starts a WebSocket test system; it is killed when the test ends.
func NewWS(t testing.TB) *WSServer {
	s := &WSServer{conns: map[*websocket.Conn]bool{}}
	s.cond = sync.NewCond(&s.mu)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.Kill)
	return s
}

// URL is the ws:// URL of the server.
func (s *WSServer) URL() string { return "ws://" + s.Addr }

func (s *WSServer) serve(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.srv = &http.Server{Handler: http.HandlerFunc(s.handle), ReadHeaderTimeout: 10 * time.Second}
	srv := s.srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (s *WSServer) handle(w http.ResponseWriter, r *http.Request) {
	// Production Origin headers are forwarded by replay: accept any.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: s.Subprotos, CompressionMode: s.Compress, InsecureSkipVerify: true})
	if err != nil {
		return
	}
	c.SetReadLimit(-1)
	s.mu.Lock()
	if s.ln == nil {
		s.mu.Unlock()
		_ = c.CloseNow()
		return
	}
	s.n++
	n := s.n
	s.conns[c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.CloseNow()
	}()
	for {
		typ, rd, err := c.Reader(context.Background())
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				s.mu.Lock()
				s.closes = append(s.closes, ce.Code)
				s.mu.Unlock()
			}
			return
		}
		rec := Record{ConnN: n, Path: r.URL.RequestURI(), Subprotocol: c.Subprotocol(), Header: r.Header, Type: typ}
		if err := readRecord(rd, &rec); err != nil {
			// The message never completed: not recorded.
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				s.mu.Lock()
				s.closes = append(s.closes, ce.Code)
				s.mu.Unlock()
			}
			return
		}
		s.mu.Lock()
		s.recs = append(s.recs, rec)
		s.cond.Broadcast()
		s.mu.Unlock()
		if s.Respond != nil {
			if rt, p, ok := s.Respond(rec.Path, typ, rec.Payload); ok {
				if err := c.Write(context.Background(), rt, p); err != nil {
					return
				}
			}
		}
	}
}

func readRecord(rd io.Reader, rec *Record) error {
	h := sha256.New()
	w := &keepWriter{h: h}
	n, err := io.Copy(w, rd)
	if err != nil {
		return err
	}
	rec.Size = n
	copy(rec.SHA256[:], h.Sum(nil))
	rec.Payload = w.keep
	rec.At = time.Now()
	return nil
}

type keepWriter struct {
	h    hash.Hash
	keep []byte
}

func (k *keepWriter) Write(p []byte) (int, error) {
	k.h.Write(p)
	if room := KeepBytes - len(k.keep); room > 0 {
		k.keep = append(k.keep, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Kill stops the server at once: the listener and every connection close
// without a handshake, as if the process died.
func (s *WSServer) Kill() {
	s.mu.Lock()
	srv := s.srv
	s.ln = nil
	conns := make([]*websocket.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	for _, c := range conns {
		_ = c.CloseNow()
	}
}

// Restart listens again on the same address.
func (s *WSServer) Restart(t testing.TB) {
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", s.Addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.serve(ln)
}

// Records returns a copy of what was read so far.
func (s *WSServer) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.recs...)
}

// CloseCodes returns the close codes the server received.
func (s *WSServer) CloseCodes() []websocket.StatusCode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]websocket.StatusCode(nil), s.closes...)
}

// Wait polls until cond holds over the records, or fails the test after
// timeout.
func (s *WSServer) Wait(t testing.TB, timeout time.Duration, what string, cond func([]Record) bool) []Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs := s.Records()
		if cond(recs) {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (have %d records)", timeout, what, len(recs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client is a listen-mode test system: a WebSocket client that records
// what replay pushes to it.
type Client struct {
	c    *websocket.Conn
	mu   sync.Mutex
	recs []Record
	done chan struct{}
}

// Dial connects a Client to url.
func Dial(t testing.TB, url string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	cl := &Client{c: c, done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		for {
			typ, rd, err := c.Reader(context.Background())
			if err != nil {
				return
			}
			rec := Record{Type: typ}
			if err := readRecord(rd, &rec); err != nil {
				return
			}
			cl.mu.Lock()
			cl.recs = append(cl.recs, rec)
			cl.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = c.CloseNow() })
	return cl
}

// Records returns what the client read so far.
func (cl *Client) Records() []Record {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]Record(nil), cl.recs...)
}

// Close closes the client.
func (cl *Client) Close() { _ = cl.c.CloseNow() }

// Done is closed when the client's connection ended.
func (cl *Client) Done() <-chan struct{} { return cl.done }

// TCPServer is a raw TCP test system recording each connection's bytes.
type TCPServer struct {
	Addr string
	Echo bool

	mu      sync.Mutex
	streams []*TCPStream
	ln      net.Listener
}

// TCPStream is what one accepted connection received.
type TCPStream struct {
	mu   sync.Mutex
	h    hash.Hash
	Size int64
	head []byte
	Done bool
}

// Sum returns the SHA-256 of the bytes received so far.
func (t *TCPStream) Sum() (size int64, sum [32]byte, done bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	copy(sum[:], t.h.Sum(nil))
	return t.Size, sum, t.Done
}

// NewTCP starts a TCP test system on 127.0.0.1.
func NewTCP(t testing.TB, echo bool) *TCPServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &TCPServer{Addr: ln.Addr().String(), Echo: echo, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			st := &TCPStream{h: sha256.New()}
			s.mu.Lock()
			s.streams = append(s.streams, st)
			s.mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						st.mu.Lock()
						st.h.Write(buf[:n])
						st.Size += int64(n)
						st.mu.Unlock()
						if s.Echo {
							if _, werr := c.Write(buf[:n]); werr != nil {
								return
							}
						}
					}
					if err != nil {
						st.mu.Lock()
						st.Done = true
						st.mu.Unlock()
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return s
}

// Streams returns the accepted connections so far.
func (s *TCPServer) Streams() []*TCPStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*TCPStream(nil), s.streams...)
}
