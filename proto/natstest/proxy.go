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
	"time"
)

// Proxy is a TCP proxy in front of a NATS server that passes the
// clients' protocol on publish by publish, and can swallow or delay
// publishes (see NewDropProxy, NewSlowProxy).
type Proxy struct {
	ln      net.Listener
	target  string
	match   []byte        // swallow the first publish containing it
	slow    string        // delay publishes to subjects with this prefix
	delay   time.Duration // by this much
	mu      sync.Mutex
	dropped int
}

// NewDropProxy returns a Proxy that swallows the first publish whose
// headers or body contain match: the server never sees it, so its
// acknowledgement times out in the client while later publishes are
// acknowledged — what a JetStream stream leader lost in an election does
// to a publish in flight. target is the NATS server's host:port or
// nats:// URL; the proxy stops with the test.
func NewDropProxy(t testing.TB, target, match string) *Proxy {
	return newProxy(t, &Proxy{target: target, match: []byte(match)})
}

// NewSlowProxy returns a Proxy that holds every publish to a subject
// starting with prefix (e.g. "$JS.API.", JetStream's API) for delay
// before passing it on, and what the client sends after it too: a
// JetStream cluster slow to answer, as while R3 streams are created or a
// leader is elected.
func NewSlowProxy(t testing.TB, target, prefix string, delay time.Duration) *Proxy {
	return newProxy(t, &Proxy{target: target, slow: prefix, delay: delay})
}

func newProxy(t testing.TB, p *Proxy) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln, p.target = ln, strings.TrimPrefix(p.target, "nats://")
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

// URL is the nats:// URL clients connect to.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Dropped returns how many publishes the proxy swallowed (0 or 1).
func (p *Proxy) Dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

func (p *Proxy) serve() {
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
func (p *Proxy) filter(c, s net.Conn) {
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
			if p.slow != "" && strings.HasPrefix(f[1], p.slow) {
				if w.Flush() != nil {
					return
				}
				time.Sleep(p.delay)
			}
			p.mu.Lock()
			drop := p.match != nil && p.dropped == 0 && bytes.Contains(body, p.match)
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
