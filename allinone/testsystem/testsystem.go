// Package testsystem is the built-in test system of the demo and of the
// all-in-one's tests: a WebSocket server (github.com/coder/websocket) on
// loopback that accepts any path and prints and records every message it
// receives. Replay in dial mode sends the mirrored client messages to it.
// A plain GET /healthz answers 200, so `tapline healthcheck --http ADDR`
// probes it in containers.
package testsystem

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/tapline/tapline/proto/stage"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// Message is one message the test system received.
type Message struct {
	// Conn numbers the connection from 1, in accept order.
	Conn int
	// Path is the request path of the connection's upgrade request.
	Path string
	// Type is "text" or "binary".
	Type string
	// Size is the payload length in bytes.
	Size int
	// SHA256 is the payload's hex digest.
	SHA256 string
	// Preview is the start of a text payload (at most 80 bytes).
	Preview string
}

// Server is a running test system.
type Server struct {
	srv *http.Server
	ln  net.Listener
	out io.Writer

	mu    sync.Mutex
	conns int
	msgs  []Message
	wake  chan struct{}
}

// SinkHeader is the handshake response header (replay.SinkHeader) by which
// the test system tells replay that it never answers.
const SinkHeader = "Tapline-Test-System"

// Start listens on addr (e.g. "127.0.0.1:0") and serves until Close. Every
// message is printed to out (nil: not printed).
func Start(addr string, out io.Writer) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, out: out, wake: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			s.serve(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", s.serve)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the ws:// URL of the server.
func (s *Server) URL() string { return "ws://" + s.Addr() }

// Close stops the server and closes its connections.
func (s *Server) Close() error { return s.srv.Close() }

// Messages returns a copy of every message received so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Conns returns how many WebSocket connections were accepted.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Changed returns a channel closed at the next received message or
// connection.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wake
}

func (s *Server) notify() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *Server) printf(format string, args ...any) {
	if s.out != nil {
		fmt.Fprintf(s.out, format, args...)
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	// It never answers: replay's comparison would report every production
	// response missing. replay.SinkHeader tells replay so.
	w.Header().Set(SinkHeader, "sink")
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // any Origin: the mirrored clients came from anywhere
		CompressionMode:    websocket.CompressionContextTakeover,
	})
	if err != nil {
		s.printf("test system: %s %s: not a WebSocket upgrade: %v\n", r.Method, r.URL.Path, err)
		return
	}
	c.SetReadLimit(256 << 20)
	s.mu.Lock()
	s.conns++
	id := s.conns
	s.notify()
	s.mu.Unlock()
	s.printf("test system: connection %d opened, path %s\n", id, r.URL.RequestURI())
	ctx := r.Context()
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			status := websocket.CloseStatus(err)
			if status != -1 || errors.Is(err, io.EOF) {
				s.printf("test system: connection %d closed (%v)\n", id, status)
			} else {
				s.printf("test system: connection %d ended: %v\n", id, err)
			}
			c.CloseNow()
			return
		}
		sum := sha256.Sum256(data)
		m := Message{Conn: id, Path: r.URL.Path, Type: "binary", Size: len(data), SHA256: hex.EncodeToString(sum[:])}
		if typ == websocket.MessageText {
			m.Type = "text"
			p := data
			if len(p) > 80 {
				p = p[:80]
				for len(p) > 0 && !utf8.Valid(p) {
					p = p[:len(p)-1]
				}
			}
			m.Preview = string(p)
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.notify()
		s.mu.Unlock()
		if m.Type == "text" {
			s.printf("test system: connection %d received text, %d bytes: %q\n", id, m.Size, m.Preview)
		} else {
			s.printf("test system: connection %d received binary, %d bytes, sha256 %s\n", id, m.Size, m.SHA256[:16])
		}
	}
}

// Main is `tapline testsystem`: it serves until SIGINT or SIGTERM.
func Main(args []string) int {
	fs := flag.NewFlagSet("testsystem", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "listen address")
	stage.SetEnvPrefix(fs, "TAPLINE_TESTSYSTEM_")
	if err := stage.Parse(fs, args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "testsystem: %v\n", err)
		return 2
	}
	s, err := Start(*listen, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testsystem: %v\n", err)
		return 2
	}
	fmt.Printf("test system listening on %s\n", s.URL())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	_ = s.Close()
	return 0
}
