package replay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
	"github.com/tapline/tapline/replay/replaytest"
)

// bigMsg adds a binary message of n full chunks to c and returns its
// chunk entries and payload.
func bigMsg(c *conv, n int, seed uint64) ([]*nats.Msg, []byte) {
	return bigMsgDir(c, proto.ClientToServer, n, seed)
}

// bigMsgDir is bigMsg in direction dir.
func bigMsgDir(c *conv, dir proto.Direction, n int, seed uint64) ([]*nats.Msg, []byte) {
	p := make([]byte, n*proto.MaxChunk)
	replaytest.Gen(seed)(0, p)
	m := c.add(dir, proto.OpBinary, p)
	var out []*nats.Msg
	for ch := range m.Chunks() {
		out = append(out, ch)
	}
	return out, p
}

// abortedWith reports whether the test system got close status 1011.
func abortedWith(srv *testsys.WSServer) bool {
	for _, code := range srv.CloseCodes() {
		if code == websocket.StatusInternalError {
			return true
		}
	}
	return false
}

// TestUnfinishedMessageAborted streams the first chunks of a large message
// and then ends it without its last chunk in each way the stream can: the
// connection's close event, a gap then the close event, and chunks that
// simply stop (the connection idles out). The test system must never read
// the partial message as a complete one: replay aborts the connection with
// status 1011, and the result says skipped with complete false.
func TestUnfinishedMessageAborted(t *testing.T) {
	cases := []struct {
		name string
		tail func(c *conv) []*nats.Msg
		args []string
	}{
		{"close", func(c *conv) []*nats.Msg { return []*nats.Msg{c.close()} }, nil},
		{"gap-then-close", func(c *conv) []*nats.Msg {
			return []*nats.Msg{replaytest.Gap(c.vni, c.shard, proto.GapEvent{Conn: c.id, Dir: proto.ClientToServer, Offset: 3 << 20, Bytes: 100}), c.close()}
		}, nil},
		{"chunks-stop", func(*conv) []*nats.Msg { return nil }, []string{"--conn-idle", "1s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			srv := testsys.NewWS(t)
			c := newConv(1, "/abort")
			c.add(proto.ClientToServer, proto.OpText, []byte("before"))
			chunks, _ := bigMsg(c, 5, 7)
			msgs := []*nats.Msg{c.open("websocket")}
			for ch := range c.msgs[0].Chunks() {
				msgs = append(msgs, ch)
			}
			msgs = append(msgs, chunks[:3]...)
			msgs = append(msgs, tc.tail(c)...)
			e.publish(msgs...)
			e.startReplay(nil, append([]string{"--target", srv.URL(), "--compare=false"}, tc.args...)...)
			rs := e.waitResults(60*time.Second, "the unfinished message's result", func(rs []resultMsg) bool {
				for _, r := range rs {
					if r.body.Kind == "message" && r.body.Seq == 2 {
						return true
					}
				}
				return false
			})
			for _, r := range rs {
				if r.body.Kind != "message" || r.body.Seq != 2 {
					continue
				}
				if r.body.Result != "skipped" || r.body.Complete == nil || *r.body.Complete || !strings.Contains(r.body.Reason, "aborted") {
					t.Fatalf("unfinished message reported %s complete=%v reason %q; want skipped, complete false, aborted",
						r.body.Result, ptrBool(r.body.Complete), r.body.Reason)
				}
			}
			srv.Wait(t, 20*time.Second, "the abort", func([]testsys.Record) bool { return abortedWith(srv) })
			recs := srv.Records()
			if len(recs) != 1 || string(recs[0].Payload) != "before" {
				for _, rec := range recs {
					t.Logf("record: %d bytes", rec.Size)
				}
				t.Fatalf("test system read %d messages, want only the one before the unfinished message", len(recs))
			}
		})
	}
}

func ptrBool(b *bool) string {
	if b == nil {
		return "absent"
	}
	return fmt.Sprint(*b)
}

// TestShutdownInsideMessageResends stops replay (cleanly and as a crash)
// while a large message is being streamed: the partial message is aborted
// at the test system, not acknowledged nor reported, and the next replay
// on the durable delivers it whole, exactly once as a complete message.
func TestShutdownInsideMessageResends(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "graceful", true: "crash"}[crash], func(t *testing.T) {
			e := newEnv(t)
			srv := testsys.NewWS(t)
			c := newConv(1, "/restart")
			chunks, payload := bigMsg(c, 5, 11)
			e.publish(append([]*nats.Msg{c.open("websocket")}, chunks[:3]...)...)
			args := []string{"--target", srv.URL(), "--compare=false", "--ack-wait", "2s"}
			first := e.startReplay(func(c *Config) { c.noNakOnStop = crash }, args...)
			deadline := time.Now().Add(30 * time.Second)
			for first.counter("tapline_replay_unacked_messages") < 4 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond) // let it write what it holds
			first.stop(t)
			for _, r := range e.Results() {
				if r.body.Kind == "message" {
					t.Fatalf("replay reported the message it was writing when stopped: %+v", r.body)
				}
			}
			e.publish(append(chunks[3:], c.close())...)
			e.startReplay(nil, args...)
			e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
				return countResults(rs, "summary", "sent") == 1
			})
			recs := srv.Records()
			if len(recs) != 1 || recs[0].SHA256 != digest(payload) {
				t.Fatalf("test system read %d messages, want the whole message once", len(recs))
			}
			if n := countResults(e.Results(), "message", "sent"); n != 1 {
				t.Fatalf("%d sent results, want 1", n)
			}
			waitAcked(t, e, "tapline-replay")
		})
	}
}

// TestListenReconnectInsideMessage: in listen mode the test system's
// connection goes away while a large message is being pushed to it, and
// the test system connects again. The new test connection gets the whole
// message, the old one never read a partial message as complete.
func TestListenReconnectInsideMessage(t *testing.T) {
	e := newEnv(t)
	addrCh := make(chan string, 1)
	r := e.startReplay(func(c *Config) { c.onListen = func(_, a string) { addrCh <- a } }, "--listen", "127.0.0.1:0=/feed")
	addr := <-addrCh
	cl1 := testsys.Dial(t, "ws://"+addr+"/feed")
	c := newConv(1, "/feed")
	chunks, payload := bigMsgDir(c, proto.ServerToClient, 5, 13)
	e.publish(append([]*nats.Msg{c.open("websocket")}, chunks[:3]...)...)
	deadline := time.Now().Add(30 * time.Second)
	for r.counter("tapline_replay_unacked_messages") < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let replay push what it holds
	cl1.Close()
	<-cl1.Done()
	cl2 := testsys.Dial(t, "ws://"+addr+"/feed")
	e.publish(append(chunks[3:], c.close())...)
	deadline = time.Now().Add(60 * time.Second)
	for len(cl2.Records()) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if recs := cl2.Records(); len(recs) != 1 || recs[0].SHA256 != digest(payload) {
		t.Fatalf("new test connection read %d messages, want the whole message", len(recs))
	}
	if recs := cl1.Records(); len(recs) != 0 {
		t.Fatalf("the test connection that went away read %d messages (%d bytes), want none", len(recs), recs[0].Size)
	}
	waitAcked(t, e, "tapline-replay")
}
