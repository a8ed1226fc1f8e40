package replay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// TestUndeliverableReportedOnce replays connections the target can never
// take — a raw TCP connection whose upstream has a --listen (WebSocket
// test connections), and a connection announced as WebSocket whose
// messages are raw TCP bytes, to a ws:// target — next to one that can be
// delivered. Each undeliverable connection gets one result naming why; its
// messages are acknowledged and counted as not deliverable, never retried;
// the good connection arrives whole.
func TestUndeliverableReportedOnce(t *testing.T) {
	const n = 5
	tcpConn := func(i int, path string) *conv {
		c := newConv(i, path)
		for k := range n {
			c.add(proto.ClientToServer, proto.OpTCP, []byte(fmt.Sprintf("bytes %d", k)))
			c.add(proto.ServerToClient, proto.OpTCP, []byte(fmt.Sprintf("bytes %d", k)))
		}
		return c
	}
	check := func(t *testing.T, e *env, r *replayer, bad string) {
		t.Helper()
		rs := e.waitResults(30*time.Second, "the undeliverable connection's summary", func(rs []resultMsg) bool {
			for _, r := range rs {
				if r.body.Kind == "summary" && r.body.Conn == bad {
					return true
				}
			}
			return false
		})
		waitAcked(t, e, "tapline-replay")
		reports := 0
		for _, res := range rs {
			if res.body.Conn == bad && res.body.Kind == "message" {
				if !strings.Contains(res.body.Reason, "not deliverable") {
					t.Fatalf("result %s %q, want one 'not deliverable' result", res.body.Result, res.body.Reason)
				}
				reports++
			}
		}
		if reports != 1 {
			t.Fatalf("%d results for the undeliverable connection, want 1", reports)
		}
		if got := r.counter("tapline_replay_undeliverable_messages_total"); got != n {
			t.Fatalf("undeliverable counter %v, want %d", got, n)
		}
		if got := r.counter("tapline_replay_errors_total", "kind", "dial"); got != 0 {
			t.Fatalf("%v dial errors: an undeliverable connection was retried", got)
		}
	}
	t.Run("listen-tcp", func(t *testing.T) {
		e := newEnv(t)
		addrCh := make(chan string, 1)
		r := e.startReplay(func(c *Config) { c.onListen = func(_, a string) { addrCh <- a } }, "--listen", "127.0.0.1:0=10.1.0.1:443")
		cl := testsys.Dial(t, "ws://"+<-addrCh+"/")
		bad := tcpConn(1, "")
		good := newConv(2, "/feed")
		good.add(proto.ServerToClient, proto.OpText, []byte("tick"))
		e.publish(append(bad.entries("tcp"), good.entries("websocket")...)...)
		check(t, e, r, bad.id)
		recs := cl.Records()
		if len(recs) != 1 || string(recs[0].Payload) != "tick" {
			t.Fatalf("test connection read %d messages, want the one tick", len(recs))
		}
	})
	t.Run("dial-tcp-bytes-on-websocket", func(t *testing.T) {
		e := newEnv(t)
		srv := testsys.NewWS(t)
		r := e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--retry-min", "10ms", "--retry-max", "20ms")
		bad := tcpConn(1, "/x")
		good := newConv(2, "/y")
		good.add(proto.ClientToServer, proto.OpText, []byte("hello"))
		e.publish(append(bad.entries("websocket"), good.entries("websocket")...)...)
		check(t, e, r, bad.id)
		srv.Wait(t, 20*time.Second, "the good message", func(rs []testsys.Record) bool { return len(rs) == 1 })
	})
}
