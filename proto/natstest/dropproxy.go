package natstest

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// DropProxy is a TCP proxy in front of a NATS server that swallows the
// first publish whose headers or body contain a given string: the server
// never sees it, so its acknowledgement times out in the client while
// later publishes are acknowledged — what a JetStream stream leader lost
// in an election does to a publish in flight.
type DropProxy struct {
	ln      net.Listener
	target  string
	match   []byte
	mu      sync.Mutex
	dropped int
}

// NewDropProxy listens on a loopback port and forwards every connection to
// target (host:port of a NATS server), swallowing the first publish that
// contains match. It stops with the test.
func NewDropProxy(t testing.TB, target, match string) *DropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &DropProxy{ln: ln, target: strings.TrimPrefix(target, "nats://"), match: []byte(match)}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

// URL is the nats:// URL clients connect to.
func (p *DropProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Dropped returns how many publishes the proxy swallowed (0 or 1).
func (p *DropProxy) Dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

func (p *DropProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		go func() { io.Copy(c, s); c.Close() }()
		go func() { p.filter(c, s); s.Close() }()
	}
}

// filter copies the client's protocol to the server, publish by publish.
func (p *DropProxy) filter(c, s net.Conn) {
	r := bufio.NewReaderSize(c, 1<<20)
	w := bufio.NewWriterSize(s, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var body []byte
		if f := strings.Fields(string(line)); len(f) >= 3 && (strings.EqualFold(f[0], "HPUB") || strings.EqualFold(f[0], "PUB")) {
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return
			}
			body = make([]byte, n+2)
			if _, err := io.ReadFull(r, body); err != nil {
				return
			}
			p.mu.Lock()
			drop := p.dropped == 0 && bytes.Contains(body, p.match)
			if drop {
				p.dropped++
			}
			p.mu.Unlock()
			if drop {
				line, body = nil, nil
			}
		}
		w.Write(line)
		w.Write(body)
		// What came before is passed on, a swallowed publish too: the
		// client may wait for it before it sends more.
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
	}
}
