package replay

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// TestListenPingFailureInsideMessage: in listen mode the test connection
// stops answering pings while a large message is being pushed to it, so
// replay drops it. The partly written message must be aborted, not left
// holding the listen address (every connection's messages would wait for
// it forever): a new test connection gets the large message whole.
func TestListenPingFailureInsideMessage(t *testing.T) {
	e := newEnv(t)
	addrCh := make(chan string, 1)
	e.startReplay(func(c *Config) { c.onListen = func(_, a string) { addrCh <- a } },
		"--listen", "127.0.0.1:0=/feed", "--write-timeout", "1s", "--ack-wait", "2s")
	addr := <-addrCh
	// A test system that never reads: it answers no ping.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mute, _, err := websocket.Dial(ctx, "ws://"+addr+"/feed", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.CloseNow()
	c := newConv(1, "/feed")
	small := c.add(proto.ServerToClient, proto.OpText, []byte("before the large message"))
	var first []*nats.Msg
	for ch := range small.Chunks() {
		first = append(first, ch)
	}
	chunks, payload := bigMsgDir(c, proto.ServerToClient, 3, 31)
	e.publish(append(append([]*nats.Msg{c.open("websocket")}, first...), chunks[0])...)
	time.Sleep(3 * time.Second) // the ping times out; the mute connection is dropped
	cl := testsys.Dial(t, "ws://"+addr+"/feed")
	e.publish(append(chunks[1:], c.close())...)
	var deadline time.Time
	// The small message was written whole to the mute connection, which
	// may have read it: it is reported in doubt, not sent to another
	// test connection (that could deliver it twice).
	e.waitResults(30*time.Second, "the small message in doubt", func(rs []resultMsg) bool {
		return countResults(rs, "message", ResultInDoubt) == 1
	})
	deadline = time.Now().Add(30 * time.Second)
	for len(cl.Records()) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	recs := cl.Records()
	if len(recs) != 1 || recs[0].SHA256 != digest(payload) {
		t.Fatalf("new test connection read %d messages, want the large one whole", len(recs))
	}
	waitAcked(t, e, "tapline-replay")
}
