package replay

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
	"github.com/tapline/tapline/replay/replaytest"
)

// TestTestSystemKilledLosesNothingAcked kills the test system in the middle
// of the replay and restarts it on the same address. Every message whose
// chunk JetStream counts as acknowledged at the moment of the kill had been
// read by the killed test system, and after the restart every message
// arrives (at least once, in order within each test connection).
func TestTestSystemKilledLosesNothingAcked(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	const nConns, nMsgs = 10, 150
	type key struct{ conn, seq int }
	seqOf := map[uint64]key{} // stream sequence -> message
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var convs []*conv
	for i := range nConns {
		c := newConv(i, fmt.Sprintf("/k/%d", i))
		for k := 1; k <= nMsgs; k++ {
			p := make([]byte, 3000+k*37%5000)
			copy(p, fmt.Sprintf("%d/%d/", i, k))
			c.add(proto.ClientToServer, proto.OpBinary, p)
		}
		convs = append(convs, c)
	}
	// Publish synchronously, interleaved, remembering stream sequences.
	lists := make([][]*replaytest.Message, nConns)
	for i, c := range convs {
		lists[i] = c.msgs
		if _, err := e.js.PublishMsg(ctx, c.open("websocket")); err != nil {
			t.Fatal(err)
		}
	}
	for k := 0; k < nMsgs; k++ {
		for i := range convs {
			for ch := range lists[i][k].Chunks() {
				ack, err := e.js.PublishMsg(ctx, ch)
				if err != nil {
					t.Fatal(err)
				}
				seqOf[ack.Sequence] = key{i, k + 1}
			}
		}
	}
	for _, c := range convs {
		if _, err := e.js.PublishMsg(ctx, c.close()); err != nil {
			t.Fatal(err)
		}
	}
	r := e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--retry-min", "20ms", "--retry-max", "200ms", "--rate-msgs", "3000")

	total := nConns * nMsgs
	srv.Wait(t, 60*time.Second, "a third of the messages", func(rs []testsys.Record) bool { return len(rs) >= total/3 })
	srv.Kill()
	before := srv.Records()
	cons, err := e.js.Consumer(ctx, proto.MsgsStream, "tapline-replay")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	floor := info.AckFloor.Stream
	parse := func(rec testsys.Record) key {
		f := strings.SplitN(string(rec.Payload[:min(len(rec.Payload), 16)]), "/", 3)
		a, _ := strconv.Atoi(f[0])
		b, _ := strconv.Atoi(f[1])
		return key{a, b}
	}
	seen := map[key]bool{}
	for _, rec := range before {
		seen[parse(rec)] = true
	}
	// Let replay notice the kill (it retries), then every message reported
	// sent so far — acknowledged before its result was published — must
	// have been read by the killed test system.
	deadline := time.Now().Add(30 * time.Second)
	for r.counter("tapline_replay_errors_total", "kind", "dial") < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	sent := 0
	for _, res := range e.Results() {
		if res.body.Kind == "message" && res.body.Result == "sent" {
			sent++
			k := key{0, int(res.body.Seq)}
			fmt.Sscanf(res.body.Conn, "conn-%d", &k.conn)
			if !seen[k] {
				t.Fatalf("message %v reported sent (and acknowledged) but never read by the test system", k)
			}
		}
	}
	acked := 0
	for s, k := range seqOf {
		if s <= floor {
			acked++
			if !seen[k] {
				t.Fatalf("message %v (stream seq %d) acknowledged but never read by the test system", k, s)
			}
		}
	}
	t.Logf("killed after %d reads; %d reported sent; ack floor %d covers %d messages", len(before), sent, floor, acked)
	if sent == 0 {
		t.Fatal("no message reported sent before the kill")
	}
	srv.Restart(t)
	srv.Wait(t, 120*time.Second, "every message after the restart", func(rs []testsys.Record) bool {
		got := map[key]bool{}
		for _, rec := range rs {
			got[parse(rec)] = true
		}
		return len(got) == total
	})
	// Within each test connection, messages of one original connection
	// never go backwards except when a connection is resumed.
	last := map[int]int{}
	for _, rec := range srv.Records() {
		k := parse(rec)
		if prev, ok := last[rec.ConnN]; ok && k.seq <= prev {
			t.Fatalf("test connection %d: message %v after %d", rec.ConnN, k, prev)
		}
		last[rec.ConnN] = k.seq
	}
	waitAcked(t, e, "tapline-replay")
}

// memChildEnv marks the process that measures memory.
const memChildEnv = "TAPLINE_REPLAY_TEST_MEMORY_CHILD"

// TestLargeMessageBoundedMemory streams a 100 MB message through replay to
// a test system that hashes it as it reads. The whole path — the JetStream
// client, replay, the test system, all in this process (the server runs in
// a child) — keeps its heap within what the configured buffers bound, far
// below the message size, and the digest matches.
func TestLargeMessageBoundedMemory(t *testing.T) {
	if os.Getenv(memChildEnv) == "" {
		// Measure in a fresh process, so what earlier tests left on the
		// heap does not count.
		args := []string{"-test.run=^TestLargeMessageBoundedMemory$", "-test.v"}
		if testing.Short() {
			args = append(args, "-test.short")
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), memChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "robust_test.go") {
				t.Log(strings.TrimSpace(line))
			}
		}
		if err != nil {
			t.Fatalf("measuring process failed: %v\n%s", err, out)
		}
		return
	}
	size := int64(100 << 20)
	if testing.Short() || raceEnabled {
		size = 20 << 20
	}
	e := newEnvURL(t, natsChild(t)) // the server's block caches are not ours
	srv := testsys.NewWS(t)
	c := newConv(1, "/big")
	m := c.add(proto.ClientToServer, proto.OpBinary, nil)
	m.Payload, m.Size, m.Fill = nil, size, replaytest.Gen(99)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for _, msg := range c.entries("websocket") {
		if _, err := e.js.PublishMsg(ctx, msg, jetstream.WithRetryAttempts(20)); err != nil {
			t.Fatal(err)
		}
	}
	// The expected digest, computed in pieces.
	h := newHasher()
	buf := make([]byte, proto.MaxChunk)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		m.Fill(off, buf[:n])
		h.Write(buf[:n])
	}
	want := h.sum()
	buf = nil
	runtime.GC()
	debug.FreeOSMemory()
	// The live heap: what the last collection marked reachable. Unlike
	// HeapAlloc after a collection it does not count what other
	// goroutines allocated while the collection ran, so it does not grow
	// with the machine's load.
	liveBytes := func() uint64 {
		s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
		rtmetrics.Read(s)
		return s[0].Value.Uint64()
	}
	base := liveBytes()

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		// Sample what is live (after a collection), not garbage waiting
		// for the collector: that is what the buffers bound, and it does
		// not depend on when the collector happens to run.
		for {
			runtime.GC()
			if l := liveBytes(); l > peak.Load() {
				peak.Store(l)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	const inflight, pullAhead = 4 << 20, 2 << 20
	e.startReplay(nil, "--target", srv.URL(), "--compare=false",
		"--max-inflight-bytes", strconv.Itoa(inflight), "--pull-max-bytes", strconv.Itoa(pullAhead))
	recs := srv.Wait(t, 120*time.Second, "the large message", func(rs []testsys.Record) bool { return len(rs) == 1 })
	close(stop)
	<-sampled
	if recs[0].Size != size || recs[0].SHA256 != want {
		t.Fatalf("got %d bytes %s, want %d bytes %s", recs[0].Size, short(recs[0].SHA256), size, short(want))
	}
	p := peak.Load()
	t.Logf("message %d MB; live heap before %d MB, peak during replay %d MB", size>>20, base>>20, p>>20)
	// What replay keeps live by design: the in-flight budget, what is
	// pulled ahead of delivery, the chunk being written, one fetched again
	// from the stream and the test system's read of one. Each of those
	// bytes may exist twice at a moment: as received (the NATS client's
	// message, a stream fetch's base64 JSON response) and as decoded or
	// held. libBuffers is a margin for the libraries' fixed buffers
	// (bufio, NATS client, WebSocket, HTTP).
	const libBuffers = 8 << 20
	buffered := uint64(inflight + pullAhead + 3*proto.MaxChunk)
	limit := base + 2*buffered + libBuffers
	t.Logf("limit %d MB: %d MB live before + 2 x (%d MB budget + %d MB pulled ahead + 3 chunks) + %d MB", limit>>20,
		base>>20, inflight>>20, pullAhead>>20, libBuffers>>20)
	if limit >= uint64(size)/2 {
		t.Fatalf("the bound (%d MB) does not show memory independent of the message size (%d MB)", limit>>20, size>>20)
	}
	if p > limit && !raceEnabled {
		t.Fatalf("peak live heap %d MB while replaying a %d MB message (limit %d MB)", p>>20, size>>20, limit>>20)
	}
}

// TestReplayRestartKeepsOrder stops replay in the middle of the stream and
// starts another on the same durable: gracefully (held entries are handed
// back) and as a crash (they are not; the new replay waits for their
// redelivery). Every message arrives (or, after the crash, is reported in
// doubt), and within each test connection the messages of the original
// connection never go backwards.
func TestReplayRestartKeepsOrder(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "graceful", true: "crash"}[crash], func(t *testing.T) {
			e := newEnv(t)
			srv := testsys.NewWS(t)
			const nConns, nMsgs = 5, 120
			var all []*nats.Msg
			for i := range nConns {
				c := newConv(i, fmt.Sprintf("/r/%d", i))
				for k := 1; k <= nMsgs; k++ {
					c.add(proto.ClientToServer, proto.OpText, []byte(fmt.Sprintf("%d/%d/", i, k)))
				}
				all = append(all, c.entries("websocket")...)
			}
			e.publish(all...)
			args := []string{"--target", srv.URL(), "--compare=false", "--rate-msgs", "400", "--ack-wait", "2s"}
			first := e.startReplay(func(c *Config) { c.noNakOnStop = crash }, args...)
			srv.Wait(t, 60*time.Second, "some messages", func(rs []testsys.Record) bool { return len(rs) >= nConns*nMsgs/4 })
			first.stop(t)
			e.startReplay(nil, args...)
			parse := func(rec testsys.Record) (int, int) {
				f := strings.SplitN(string(rec.Payload), "/", 3)
				a, _ := strconv.Atoi(f[0])
				b, _ := strconv.Atoi(f[1])
				return a, b
			}
			// A crash may leave a message in doubt (its last frame was
			// being written): reported so, it is not sent again.
			srv.Wait(t, 120*time.Second, "every message, or its in-doubt report", func(rs []testsys.Record) bool {
				seen := map[[2]int]bool{}
				for _, r := range rs {
					a, b := parse(r)
					seen[[2]int{a, b}] = true
				}
				for _, r := range e.Results() {
					if r.body.Result == ResultInDoubt {
						var a int
						if _, err := fmt.Sscanf(r.body.Conn, "conn-%d", &a); err == nil {
							seen[[2]int{a, int(r.body.Seq)}] = true
						}
					}
				}
				return len(seen) == nConns*nMsgs
			})
			last := map[int]int{}
			for _, rec := range srv.Records() {
				_, k := parse(rec)
				if prev, ok := last[rec.ConnN]; ok && k <= prev {
					t.Fatalf("test connection %d (%s): message %d after %d", rec.ConnN, rec.Path, k, prev)
				}
				last[rec.ConnN] = k
			}
			waitAcked(t, e, "tapline-replay")
		})
	}
}
