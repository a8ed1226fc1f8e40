package replay

import (
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// TestRedeliveryWhileClosingNotSentTwice: JetStream redelivers a
// connection's last message while its acknowledgement is on the way (as
// after a NATS restart: the server redelivers what it has not yet seen
// acknowledged), and the redelivery reaches replay while the connection is
// being finished after its close event. It was delivered and confirmed:
// the test system must get every message exactly once, and the redelivery
// is acknowledged without sending.
func TestRedeliveryWhileClosingNotSentTwice(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	c := newConv(1, "/closing")
	for _, p := range []string{"one", "two", "three"} {
		c.add(proto.ClientToServer, proto.OpText, []byte(p))
	}
	e.publish(c.entries("websocket")...) // stream sequences: open 1, messages 2-4, close 5
	const last = 4
	redelivered := make(chan struct{})
	var nakOnce, seenOnce sync.Once
	mod := func(cfg *Config) {
		cfg.beforeAck = func(seq uint64, reply string) {
			if seq != last {
				return
			}
			nakOnce.Do(func() {
				// The server redelivers the entry before it sees the
				// acknowledgement that follows.
				if err := e.nc.Publish(reply, []byte("-NAK")); err != nil {
					t.Error(err)
				}
				if err := e.nc.Flush(); err != nil {
					t.Error(err)
				}
				select {
				case <-redelivered:
				case <-time.After(30 * time.Second):
					t.Error("the last message was not redelivered: the test proves nothing")
				}
			})
		}
		cfg.afterDispatch = func(seq, delivered uint64) {
			if seq == last && delivered > 1 {
				seenOnce.Do(func() { close(redelivered) })
			}
		}
	}
	e.startReplay(mod, "--target", srv.URL(), "--compare=false", "--ack-wait", "5s")
	e.waitResults(60*time.Second, "the connection's summary", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "sent") >= 1
	})
	waitAcked(t, e, "tapline-replay") // the redelivery too: sent again or dropped
	got := map[string]int{}
	for _, r := range srv.Records() {
		got[string(r.Payload)]++
	}
	for _, p := range []string{"one", "two", "three"} {
		if got[p] != 1 {
			t.Errorf("message %q reached the test system %d times, want once", p, got[p])
		}
	}
	if n := countResults(e.Results(), "summary", "sent"); n != 1 {
		t.Errorf("%d connection summaries, want 1", n)
	}
}
