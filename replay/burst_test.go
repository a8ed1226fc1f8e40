package replay

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// writeSyscalls is how many write system calls this process has made
// (/proc/self/io syscw).
func writeSyscalls(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatalf("write system calls cannot be counted here: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "syscw: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no syscw in /proc/self/io")
	return 0
}

// slowAccept forwards connections to addr, each only after delay: the
// messages replay pulls meanwhile queue up behind the handshake.
func slowAccept(t *testing.T, addr string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				time.Sleep(delay)
				u, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
				_, _ = io.Copy(u, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestBurstCoalescesWrites: a connection whose queue holds a backlog of
// small messages gets them in order, each once, with far fewer write
// system calls than messages (not one per WebSocket frame): replay writes
// the frames it has queued together. The NATS server runs in its own
// process, so the count is replay's (and the test system's and the
// forwarder's) alone.
func TestBurstCoalescesWrites(t *testing.T) {
	e := newEnvURL(t, natsChild(t))
	srv := testsys.NewWS(t)
	target := "ws://" + slowAccept(t, srv.Addr, time.Second)
	const n = 3000
	c := newConv(1, "/burst")
	for k := 1; k <= n; k++ {
		c.add(proto.ClientToServer, proto.OpBinary, []byte(fmt.Sprintf("%05d", k)+strings.Repeat("x", 195)))
	}
	var all []*nats.Msg
	all = append(all, c.entries("websocket")...)
	e.publish(all...)
	before := writeSyscalls(t)
	e.startReplay(nil, "--target", target, "--compare=false", "--results", "off")
	rs := srv.Wait(t, 120*time.Second, "every message", func(rs []testsys.Record) bool { return len(rs) >= n })
	writes := writeSyscalls(t) - before
	if len(rs) != n {
		t.Fatalf("test system read %d messages, want %d", len(rs), n)
	}
	for i, r := range rs {
		if want := fmt.Sprintf("%05d", i+1); string(r.Payload[:5]) != want {
			t.Fatalf("message %d is %q, want %s: out of order or twice", i, r.Payload[:5], want)
		}
	}
	t.Logf("%d messages, %d write system calls", n, writes)
	if writes >= n/4 {
		t.Errorf("%d write system calls for %d queued messages: frames are not written together", writes, n)
	}
}

// TestBurstOverTLS: with a wss:// test system the coalesced frames go
// through TLS (the buffer sits under it): a queued burst arrives whole,
// in order, each message once.
func TestBurstOverTLS(t *testing.T) {
	e := newEnvURL(t, natsChild(t))
	var mu sync.Mutex
	var got [][]byte
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			_, p, err := c.Read(context.Background())
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, p)
			mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	const n = 2000
	c := newConv(1, "/tls")
	for k := 1; k <= n; k++ {
		c.add(proto.ClientToServer, proto.OpBinary, []byte(fmt.Sprintf("%05d", k)+strings.Repeat("y", 150)))
	}
	e.publish(c.entries("websocket")...)
	e.startReplay(nil, "--target", "wss://"+srv.Listener.Addr().String(), "--tls-insecure", "--compare=false", "--results", "off")
	deadline := time.Now().Add(120 * time.Second)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("test system read %d of %d messages", k, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("test system read %d messages, want %d", len(got), n)
	}
	for i, p := range got {
		if want := fmt.Sprintf("%05d", i+1); string(p[:5]) != want {
			t.Fatalf("message %d is %q, want %s", i, p[:5], want)
		}
	}
}
