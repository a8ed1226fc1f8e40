package replay

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
	"github.com/tapline/tapline/replay/replaytest"
)

// TestIncompletePolicy replays the same connection under each
// --incomplete policy. Messages touched by loss are skipped, sent or sent
// marked; a multi-chunk message found incomplete only at its last chunk,
// after part of it was streamed, is aborted (never received as complete)
// under skip and mark. Every incomplete message is counted and reported.
func TestIncompletePolicy(t *testing.T) {
	big := func(seed uint64) []byte {
		b := make([]byte, 2*proto.MaxChunk+10)
		replaytest.Gen(seed)(0, b)
		return b
	}
	build := func() *conv {
		c := newConv(1, "/inc")
		c.add(proto.ClientToServer, proto.OpText, []byte("ok-1"))
		m2 := c.add(proto.ClientToServer, proto.OpText, []byte("lossy-2"))
		m2.Incomplete, m2.Missing = true, 5
		m3 := c.add(proto.ClientToServer, proto.OpBinary, big(3))
		m3.Incomplete, m3.LossAtChunk, m3.Missing = true, 2, 100
		m4 := c.add(proto.ClientToServer, proto.OpBinary, big(4)[:proto.MaxChunk+7])
		m4.Incomplete, m4.Missing = true, 1
		c.add(proto.ClientToServer, proto.OpText, []byte("ok-5"))
		return c
	}
	marker := "TAPLINE-INCOMPLETE:"
	cases := []struct {
		policy  string
		want    [][]byte
		skipped int
	}{
		{"skip", [][]byte{[]byte("ok-1"), []byte("ok-5")}, 3},
		{"send", [][]byte{[]byte("ok-1"), []byte("lossy-2"), big(3), big(4)[:proto.MaxChunk+7], []byte("ok-5")}, 0},
		{"mark", [][]byte{[]byte("ok-1"), []byte(marker + "lossy-2"), append([]byte(marker), big(4)[:proto.MaxChunk+7]...), []byte("ok-5")}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			e := newEnv(t)
			srv := testsys.NewWS(t)
			c := build()
			e.publish(c.entries("websocket")...)
			r := e.startReplay(nil, "--target", srv.URL(), "--incomplete", tc.policy, "--compare=false")
			rs := e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
				return countResults(rs, "summary", "sent") == 1
			})
			recs := srv.Records()
			if len(recs) != len(tc.want) {
				t.Fatalf("test system read %d complete messages, want %d", len(recs), len(tc.want))
			}
			for i, w := range tc.want {
				if recs[i].SHA256 != digest(w) {
					t.Fatalf("message %d: got %q..., want %q...", i, recs[i].Payload[:min(24, len(recs[i].Payload))], w[:min(24, len(w))])
				}
			}
			if n := countResults(rs, "message", "skipped"); n != tc.skipped {
				t.Fatalf("%d skipped results, want %d", n, tc.skipped)
			}
			if got := r.counter("tapline_replay_incomplete_total"); got != 3 {
				t.Fatalf("incomplete counter %v, want 3", got)
			}
			if tc.policy != "send" {
				aborted := false
				for _, code := range srv.CloseCodes() {
					aborted = aborted || code == websocket.StatusInternalError
				}
				if !aborted {
					t.Fatalf("the partly streamed incomplete message was not aborted with 1011 (close codes %v)", srv.CloseCodes())
				}
				found := false
				for _, r := range rs {
					found = found || (r.body.Seq == 3 && r.body.Result == "skipped" && strings.Contains(r.body.Reason, "aborted"))
				}
				if !found {
					t.Fatal("no skipped result saying message 3 was aborted")
				}
			}
		})
	}
}

// TestPacing checks the original timing by order and relative gaps: the
// pacer never sends a message before its original offset (scaled by
// --speed), so the received offsets are at least (most of) the original
// ones, while --pace fast compresses them.
func TestPacing(t *testing.T) {
	offsets := []time.Duration{0, 150 * time.Millisecond, 160 * time.Millisecond, 600 * time.Millisecond, 610 * time.Millisecond}
	run := func(t *testing.T, args ...string) []time.Duration {
		e := newEnv(t)
		srv := testsys.NewWS(t)
		c := newConv(1, "/pace")
		for i, off := range offsets {
			m := c.add(proto.ClientToServer, proto.OpText, []byte(fmt.Sprintf("m%d", i)))
			m.FirstNs = 1_700_000_000_000_000_000 + int64(off)
		}
		e.publish(c.entries("websocket")...)
		e.startReplay(nil, append([]string{"--target", srv.URL(), "--compare=false"}, args...)...)
		recs := srv.Wait(t, 60*time.Second, "all messages", func(rs []testsys.Record) bool { return len(rs) == len(offsets) })
		var got []time.Duration
		for i, r := range recs {
			if string(r.Payload) != fmt.Sprintf("m%d", i) {
				t.Fatalf("order: message %d is %q", i, r.Payload)
			}
			got = append(got, r.At.Sub(recs[0].At))
		}
		return got
	}
	t.Run("original", func(t *testing.T) {
		got := run(t, "--pace", "original")
		for i := range offsets {
			if got[i] < offsets[i]*8/10 {
				t.Fatalf("message %d arrived at +%v, before its original offset +%v", i, got[i], offsets[i])
			}
		}
		// The large original gap stays the largest one.
		if got[3]-got[2] < got[2]-got[1] {
			t.Fatalf("gaps not kept: %v", got)
		}
	})
	t.Run("speed4", func(t *testing.T) {
		got := run(t, "--pace", "original", "--speed", "4")
		for i := range offsets {
			if got[i] < offsets[i]/4*8/10 {
				t.Fatalf("message %d arrived at +%v, before +%v/4", i, got[i], offsets[i])
			}
		}
	})
	t.Run("rate-msgs", func(t *testing.T) {
		got := run(t, "--pace", "fast", "--rate-msgs", "10")
		// 5 messages at 10/s with a burst of 1: at least 4 intervals of 100 ms.
		if got[4] < 300*time.Millisecond {
			t.Fatalf("5 messages at --rate-msgs 10 took only %v", got[4])
		}
	})
}

// TestRawTCP replays raw TCP connections as byte streams in order, one TCP
// connection each, and compares the echoed bytes with production's.
func TestRawTCP(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewTCP(t, true)
	var want [][32]byte
	var all []*nats.Msg
	for i := range 3 {
		c := newConv(i, "")
		var stream []byte
		for k := range 6 {
			size := 100 + 1000*k
			if i == 1 && k == 3 {
				size = proto.MaxChunk + 5000
			}
			p := make([]byte, size)
			replaytest.Gen(uint64(i*100+k))(0, p)
			c.add(proto.ClientToServer, proto.OpTCP, p)
			c.add(proto.ServerToClient, proto.OpTCP, p) // what an echo server answers
			stream = append(stream, p...)
		}
		want = append(want, digest(stream))
		all = append(all, c.entries("tcp")...)
	}
	e.publish(all...)
	e.startReplay(nil, "--target", "tcp://"+srv.Addr)
	rs := e.waitResults(60*time.Second, "three summaries", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "match")+countResults(rs, "summary", "mismatch") == 3
	})
	if n := countResults(rs, "summary", "match"); n != 3 {
		for _, r := range rs {
			t.Logf("%+v", r.body)
		}
		t.Fatalf("%d connections matched, want 3", n)
	}
	got := map[[32]byte]bool{}
	for _, s := range srv.Streams() {
		_, sum, _ := s.Sum()
		got[sum] = true
	}
	for i, w := range want {
		if !got[w] {
			t.Fatalf("stream %d not received byte-exact", i)
		}
	}
}

// TestResponseComparison compares a test system's JSON answers with the
// production responses, ignoring a timestamp field and a request id.
func TestResponseComparison(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	n := 0
	srv.Respond = func(_ string, typ websocket.MessageType, p []byte) (websocket.MessageType, []byte, bool) {
		n++
		return websocket.MessageText, []byte(fmt.Sprintf(`{"ts": %d, "echo": %q, "note": "req-%d"}`, time.Now().UnixNano(), p, 1000+n)), true
	}
	c := newConv(1, "/cmp")
	for i := range 5 {
		req := fmt.Sprintf("q%d", i)
		c.add(proto.ClientToServer, proto.OpText, []byte(req))
		echo := req
		if i == 3 {
			echo = "something else" // production answered differently
		}
		c.add(proto.ServerToClient, proto.OpText, []byte(fmt.Sprintf(`{"echo":%q,"ts":1,"note":"req-%d"}`, echo, i)))
	}
	e.publish(c.entries("websocket")...)
	e.startReplay(nil, "--target", srv.URL(), "--ignore-json-path", "ts", "--ignore-regex", `req-[0-9]+`)
	rs := e.waitResults(60*time.Second, "the summary", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "mismatch") == 1
	})
	if m, mm := countResults(rs, "message", "match"), countResults(rs, "message", "mismatch"); m != 4 || mm != 1 {
		t.Fatalf("%d matches and %d mismatches, want 4 and 1", m, mm)
	}
	for _, r := range rs {
		if r.body.Result == "mismatch" && r.body.Kind == "message" {
			if r.body.Seq != 4 || r.h.Get(proto.HdrResult) != "mismatch" || r.h.Get(proto.HdrConn) != c.id || r.body.Reason == "" {
				t.Fatalf("mismatch result %+v headers %v", r.body, r.h)
			}
		}
	}
}

// TestGiveUpReportsConnection: a test system that never comes up makes the
// connection fail after --give-up; its messages are reported failed (not
// silently dropped) and acknowledged.
func TestGiveUpReportsConnection(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newConv(1, "/gone")
	for i := range 3 {
		c.add(proto.ClientToServer, proto.OpText, []byte(fmt.Sprint(i)))
	}
	e.publish(c.entries("websocket")...)
	e.startReplay(nil, "--target", "ws://"+addr, "--give-up", "1s", "--retry-min", "20ms", "--retry-max", "200ms")
	rs := e.waitResults(60*time.Second, "a failed summary", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "failed") == 1
	})
	if n := countResults(rs, "message", "failed"); n < 3 {
		t.Fatalf("%d failed message results, want >= 3", n)
	}
	waitAcked(t, e, "tapline-replay")
}

// waitAcked waits until the durable consumer has nothing pending.
func waitAcked(t *testing.T, e *env, durable string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		cons, err := e.js.Consumer(ctx, proto.MsgsStream, durable)
		var pending, ack int
		if err == nil {
			info, ierr := cons.Info(ctx)
			if ierr == nil {
				pending, ack = int(info.NumPending), info.NumAckPending
			} else {
				err = ierr
			}
		}
		cancel()
		if err == nil && pending == 0 && ack == 0 {
			return
		}
		if time.Now().After(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if cons, cerr := e.js.Consumer(ctx, proto.MsgsStream, durable); cerr == nil {
				if info, ierr := cons.Info(ctx); ierr == nil {
					if s, serr := e.js.Stream(ctx, proto.MsgsStream); serr == nil {
						if m, merr := s.GetMsg(ctx, info.AckFloor.Stream+1); merr == nil {
							t.Logf("first unacknowledged entry: seq %d %v", m.Sequence, m.Header)
						}
					}
				}
			}
			t.Fatalf("consumer not fully acknowledged: pending %d, ack pending %d, err %v", pending, ack, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ = bytes.Equal
