package replay

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// TestListenReconnectNeverTwiceNorFalselySent: in listen mode the test
// system's connection goes away after messages were written to it and
// before they were confirmed (confirmations are delayed), and the test
// system connects again, before or after replay tried to write the next
// message. Whether the old connection read them or not (a reading and a
// mute client), no message may reach the test system twice, and a message
// it never read may not be reported sent: each is received once, or
// reported in doubt.
func TestListenReconnectNeverTwiceNorFalselySent(t *testing.T) {
	for _, tc := range []struct {
		name               string
		mute, writeBetween bool
	}{{"reading", false, true}, {"mute", true, true}, {"mute-reconnect-at-once", true, false}} {
		mute := tc.mute
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			addrCh := make(chan string, 1)
			e.startReplay(func(c *Config) {
				c.onListen = func(_, a string) { addrCh <- a }
				c.confirmDelay = 1500 * time.Millisecond
			}, "--listen", "127.0.0.1:0=/feed", "--ack-wait", "2s")
			addr := <-addrCh
			var first *testsys.Client
			var muteConn *websocket.Conn
			if mute {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, _, err := websocket.Dial(ctx, "ws://"+addr+"/feed", nil)
				if err != nil {
					t.Fatal(err)
				}
				muteConn = c
			} else {
				first = testsys.Dial(t, "ws://"+addr+"/feed")
			}
			c := newConv(1, "/feed")
			const n = 5
			msgs := []*nats.Msg{c.open("websocket")}
			for k := 1; k <= n+1; k++ {
				c.add(proto.ServerToClient, proto.OpText, []byte(fmt.Sprintf("m%d", k)))
			}
			for _, m := range c.msgs[:n] {
				for ch := range m.Chunks() {
					msgs = append(msgs, ch)
				}
			}
			e.publish(msgs...)
			deadline := time.Now().Add(30 * time.Second)
			if mute {
				time.Sleep(500 * time.Millisecond) // written to the mute connection's buffers
				_ = muteConn.CloseNow()
			} else {
				for len(first.Records()) < n && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				first.Close()
				<-first.Done()
			}
			time.Sleep(200 * time.Millisecond)
			if tc.writeBetween {
				// The next message finds no test connection.
				for ch := range c.msgs[n].Chunks() {
					e.publish(ch)
				}
				time.Sleep(300 * time.Millisecond)
			}
			second := testsys.Dial(t, "ws://"+addr+"/feed")
			if !tc.writeBetween {
				time.Sleep(300 * time.Millisecond)
				for ch := range c.msgs[n].Chunks() {
					e.publish(ch)
				}
			}
			e.publish(c.close())
			rs := e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
				return countKind(rs, "summary") >= 1
			})
			got := map[string]int{}
			if first != nil {
				for _, r := range first.Records() {
					got[string(r.Payload)]++
				}
			}
			for _, r := range second.Records() {
				got[string(r.Payload)]++
			}
			last := map[uint64]string{}
			for _, r := range rs {
				if r.body.Kind == "message" && r.body.Seq > 0 {
					last[r.body.Seq] = r.body.Result
				}
			}
			for k := 1; k <= n+1; k++ {
				id := fmt.Sprintf("m%d", k)
				res := last[uint64(k)]
				switch {
				case got[id] > 1:
					t.Errorf("%s reached the test system %d times", id, got[id])
				case got[id] == 0 && res != ResultInDoubt:
					t.Errorf("%s never reached the test system; its result is %q", id, res)
				case got[id] == 1 && res != "sent" && res != ResultInDoubt:
					t.Errorf("%s reached the test system; its result is %q", id, res)
				}
			}
			if got[fmt.Sprintf("m%d", n+1)] != 1 || last[n+1] != "sent" {
				t.Errorf("the message after the reconnect: received %d times, result %q; want once, sent", got[fmt.Sprintf("m%d", n+1)], last[n+1])
			}
			waitAcked(t, e, "tapline-replay")
		})
	}
}
