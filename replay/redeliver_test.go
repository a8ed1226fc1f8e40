package replay

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// deliverySpy records, from a client of its own, the pull deliveries
// JetStream sends to a replay whose --nats-inbox-prefix is prefix: their
// stream sequences in arrival order and their reply subjects.
type deliverySpy struct {
	nc      *nats.Conn
	mu      sync.Mutex
	seqs    []uint64
	replies map[uint64]string
}

func spyDeliveries(t *testing.T, url, prefix string) *deliverySpy {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := &deliverySpy{nc: nc, replies: map[uint64]string{}}
	if _, err := nc.Subscribe(prefix+".>", func(m *nats.Msg) {
		// $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
		tok := strings.Split(m.Reply, ".")
		if len(tok) != 9 || tok[0] != "$JS" || tok[1] != "ACK" {
			return // a status message (heartbeat, end of a fetch)
		}
		seq, err := strconv.ParseUint(tok[5], 10, 64)
		if err != nil {
			t.Errorf("ack reply %q: %v", m.Reply, err)
			return
		}
		s.mu.Lock()
		s.seqs = append(s.seqs, seq)
		s.replies[seq] = m.Reply
		s.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *deliverySpy) order() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seqs)
}

func (s *deliverySpy) reply(seq uint64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replies[seq]
}

// TestCrashRedeliveredOutOfOrder: a replay crashes holding a 120-chunk
// message (its test system was unreachable), and its in-progress
// acknowledgements of the first chunks reached the server after those of
// the later ones (its keep-alive sent them in map order). JetStream then
// redelivers the later chunks first, more of them than a connection holds
// back. The next replay must still deliver the message exactly, once: it
// reported it skipped ("first chunks of the message were not seen") in
// the soak.
func TestCrashRedeliveredOutOfOrder(t *testing.T) {
	e := newEnv(t)
	srv := testsys.NewWS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "ws://" + ln.Addr().String()
	ln.Close() // connection refused: replay A holds everything

	const nChunks, chunk = 120, 8 << 10
	c := newConv(1, "/big")
	payload := make([]byte, nChunks*chunk)
	for i := range payload {
		payload[i] = byte(i * 7 / 3)
	}
	big := c.add(proto.ClientToServer, proto.OpBinary, payload)
	big.ChunkSize = chunk
	c.add(proto.ClientToServer, proto.OpText, []byte("after"))
	entries := c.entries("websocket")
	e.publish(entries...)

	spyA := spyDeliveries(t, e.url, "_REPLAYA")
	a := e.startReplay(func(c *Config) { c.noNakOnStop = true },
		"--target", down, "--compare=false", "--ack-wait", "2s", "--nats-inbox-prefix", "_REPLAYA",
		"--retry-min", "200ms", "--retry-max", "200ms")
	deadline := time.Now().Add(30 * time.Second)
	for len(spyA.order()) < len(entries) {
		if time.Now().After(deadline) {
			t.Fatalf("replay A received %d of %d entries", len(spyA.order()), len(entries))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a keep-alive round for all of them
	a.stop(t)                          // as a crash: nothing handed back

	// The open event and the first half of the chunks get their last
	// in-progress acknowledgement a second later than the rest.
	time.Sleep(time.Second)
	first := slices.Sorted(slices.Values(spyA.order()))[:1+nChunks/2]
	for _, seq := range first {
		if err := e.nc.Publish(spyA.reply(seq), proto.ProgressBody); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The spy's interest in A's reply subjects would keep A's last pull
	// requests alive on the server: half of the redeliveries would go there.
	spyA.nc.Close()

	spyB := spyDeliveries(t, e.url, "_REPLAYB")
	e.startReplay(nil, "--target", srv.URL(), "--compare=false", "--ack-wait", "2s", "--nats-inbox-prefix", "_REPLAYB")
	rs := e.waitResults(60*time.Second, "the connection summary", func(rs []resultMsg) bool {
		return countKind(rs, "summary") >= 1
	})
	got := spyB.order()
	if slices.IsSorted(got) {
		t.Fatalf("replay B received the redeliveries in stream order %v: the test proves nothing", got)
	}
	recs := srv.Records()
	if len(recs) != 2 || recs[0].SHA256 != digest(payload) || string(recs[1].Payload) != "after" {
		for _, r := range rs {
			t.Logf("result %+v", r.body)
		}
		t.Fatalf("test system read %d messages, want the %d-byte message exactly, then after (redelivery order %v)", len(recs), len(payload), got)
	}
	if n := countResults(rs, "message", "sent"); n != 2 {
		t.Fatalf("%d sent results, want 2", n)
	}
	waitAcked(t, e, "tapline-replay")
}
