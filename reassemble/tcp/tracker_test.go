package tcp

import (
	"bytes"
	"math/rand"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// rec records what a connection produced.
type rec struct {
	data   map[proto.Direction]*bytes.Buffer
	gaps   map[proto.Direction]int64
	events []string
	closed string
	c2s    Loss
	s2c    Loss
	conn   *Conn
	order  []proto.Direction // directions of successive data runs
}

func (r *rec) Data(d proto.Direction, b []byte, _ int64) {
	r.data[d].Write(b)
	if n := len(r.order); n == 0 || r.order[n-1] != d {
		r.order = append(r.order, d)
	}
}
func (r *rec) Gap(d proto.Direction, off, n int64, _ int64, reason string) {
	r.gaps[d] += n
	if n <= 1<<20 { // placeholders for small holes only (the jump tests declare huge ones)
		r.data[d].Write(bytes.Repeat([]byte{'?'}, int(n)))
	}
	r.events = append(r.events, reason)
}
func (r *rec) Close(reason string, _ int64, c2s, s2c Loss) { r.closed, r.c2s, r.s2c = reason, c2s, s2c }

type harness struct {
	t     *testing.T
	tr    *Tracker
	recs  []*rec
	nowNs int64
}

func newHarness(t *testing.T, cfg Config) *harness {
	h := &harness{t: t, nowNs: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
	h.tr = New(cfg, func(c *Conn) Handler {
		r := &rec{data: map[proto.Direction]*bytes.Buffer{proto.ClientToServer: {}, proto.ServerToClient: {}}, gaps: map[proto.Direction]int64{}, conn: c}
		h.recs = append(h.recs, r)
		return r
	})
	return h
}

var (
	cliIP = net.IPv4(10, 0, 0, 1)
	srvIP = net.IPv4(10, 0, 0, 2)
)

const (
	cliPort = 40000
	srvPort = 8080
)

// pkt builds an Ethernet/IPv4/TCP frame.
func pkt(t testing.TB, fromClient bool, seq uint32, flags string, payload []byte) []byte {
	return pktA(t, fromClient, seq, 0, flags, payload)
}

// pktA is pkt with an acknowledgement number.
func pktA(t testing.TB, fromClient bool, seq, ack uint32, flags string, payload []byte) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: cliIP, DstIP: srvIP}
	tc := &layers.TCP{SrcPort: cliPort, DstPort: srvPort, Seq: seq, Ack: ack, Window: 65535}
	if !fromClient {
		ip.SrcIP, ip.DstIP = srvIP, cliIP
		tc.SrcPort, tc.DstPort = srvPort, cliPort
	}
	for _, f := range flags {
		switch f {
		case 'S':
			tc.SYN = true
		case 'A':
			tc.ACK = true
		case 'F':
			tc.FIN = true
		case 'R':
			tc.RST = true
		case 'P':
			tc.PSH = true
		}
	}
	_ = tc.SetNetworkLayerForChecksum(ip)
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tc, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (h *harness) feed(b []byte) {
	h.nowNs += int64(time.Millisecond)
	h.tr.Packet(&framebatch.Frame{TimeNs: h.nowNs, VNI: 7, Link: flow.LinkEthernet, OrigLen: len(b), Data: b})
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

// seg is a client data segment of stream s at offset off.
type seg struct {
	client bool
	off    int
	n      int
}

func TestHandshakeDataFin(t *testing.T) {
	h := newHarness(t, Config{})
	c2s, s2c := pattern(3000, 1), pattern(5000, 2)
	h.feed(pkt(t, true, 100, "S", nil))
	h.feed(pkt(t, false, 900, "SA", nil))
	h.feed(pkt(t, true, 101, "A", nil))
	h.feed(pkt(t, true, 101, "PA", c2s[:1000]))
	h.feed(pkt(t, true, 1101, "PA", c2s[1000:]))
	h.feed(pkt(t, false, 901, "PA", s2c[:2500]))
	h.feed(pkt(t, false, 3401, "PA", s2c[2500:]))
	h.feed(pkt(t, true, 3101, "FA", nil))
	h.feed(pkt(t, false, 5901, "FA", nil))
	h.feed(pkt(t, true, 3102, "A", nil)) // final ACK: no new connection
	if len(h.recs) != 1 {
		t.Fatalf("%d connections, want 1", len(h.recs))
	}
	r := h.recs[0]
	if r.closed != CloseFIN {
		t.Fatalf("closed %q", r.closed)
	}
	if !bytes.Equal(r.data[proto.ClientToServer].Bytes(), c2s) || !bytes.Equal(r.data[proto.ServerToClient].Bytes(), s2c) {
		t.Fatal("stream bytes differ")
	}
	if !r.conn.SYN || r.conn.Client().Port() != cliPort {
		t.Fatalf("client %v syn %v", r.conn.Client(), r.conn.SYN)
	}
	if r.c2s.BytesSeen != 3000 || r.c2s.BytesImplied != 3000 || r.s2c.BytesSeen != 5000 || r.c2s.Gaps != 0 {
		t.Fatalf("loss %+v %+v", r.c2s, r.s2c)
	}
}

// TestReorderDuplicatesOverlap sends a stream cut in segments, shuffled
// within a small window, with duplicates and overlapping resends.
func TestReorderDuplicatesOverlap(t *testing.T) {
	h := newHarness(t, Config{ReorderWindow: 64 << 10})
	data := pattern(40000, 3)
	rng := rand.New(rand.NewSource(1))
	var segs []seg
	for off := 0; off < len(data); {
		n := 1 + rng.Intn(1400)
		n = min(n, len(data)-off)
		segs = append(segs, seg{true, off, n})
		if rng.Intn(5) == 0 { // overlapping resend
			o := max(0, off-rng.Intn(300))
			segs = append(segs, seg{true, o, min(len(data)-o, n+rng.Intn(500))})
		}
		if rng.Intn(6) == 0 { // duplicate
			segs = append(segs, seg{true, off, n})
		}
		off += n
	}
	// Shuffle within windows of 8 segments.
	for i := 0; i < len(segs); i += 8 {
		w := segs[i:min(i+8, len(segs))]
		rng.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
	}
	h.feed(pkt(t, true, 999, "S", nil))
	for _, s := range segs {
		h.feed(pkt(t, true, uint32(1000+s.off), "PA", data[s.off:s.off+s.n]))
	}
	h.feed(pkt(t, true, uint32(1000+len(data)), "FA", nil))
	r := h.recs[0]
	if r.closed != CloseFIN {
		t.Fatalf("closed %q", r.closed)
	}
	if got := r.data[proto.ClientToServer].Bytes(); !bytes.Equal(got, data) {
		t.Fatalf("stream differs: %d bytes, gaps %v", len(got), r.events)
	}
	if r.c2s.Gaps != 0 || r.c2s.BytesSeen != int64(len(data)) || r.c2s.Retrans == 0 || r.c2s.OutOfOrder == 0 {
		t.Fatalf("loss %+v", r.c2s)
	}
}

// TestDroppedSegment: a lost segment becomes one gap of its exact size once
// the reorder window is exceeded, and the bytes after it are delivered.
func TestDroppedSegment(t *testing.T) {
	h := newHarness(t, Config{ReorderWindow: 4000})
	data := pattern(20000, 4)
	for off := 0; off < len(data); off += 1000 {
		if off == 5000 {
			continue
		}
		h.feed(pkt(t, true, uint32(7000+off), "PA", data[off:off+1000]))
	}
	h.tr.CloseAll(CloseShutdown)
	r := h.recs[0]
	if !r.conn.Mid || r.conn.SYN {
		t.Fatal("connection should be mid-stream")
	}
	want := append(append([]byte{}, data[:5000]...), bytes.Repeat([]byte{'?'}, 1000)...)
	want = append(want, data[6000:]...)
	if !bytes.Equal(r.data[proto.ClientToServer].Bytes(), want) {
		t.Fatal("stream differs")
	}
	if r.c2s.Gaps != 1 || r.c2s.GapBytes != 1000 || r.c2s.BytesImplied != 20000 || r.c2s.BytesSeen != 19000 || r.events[0] != ReasonReorder {
		t.Fatalf("loss %+v %v", r.c2s, r.events)
	}
	if h.tr.Buffered() != 0 {
		t.Fatalf("buffered %d after close", h.tr.Buffered())
	}
}

// TestOneDirectionMidStream: only server-to-client packets, no SYN, no
// ACKs; the lower port is guessed to be the server.
func TestOneDirectionMidStream(t *testing.T) {
	h := newHarness(t, Config{})
	data := pattern(9000, 5)
	for off := 0; off < len(data); off += 1500 {
		h.feed(pkt(t, false, uint32(0xfffff000+off), "PA", data[off:off+1500])) // wraps the sequence space
	}
	h.feed(pkt(t, false, uint32(0xfffff000+len(data)), "FA", nil))
	r := h.recs[0]
	if r.closed != CloseFIN {
		t.Fatalf("closed %q", r.closed)
	}
	if !bytes.Equal(r.data[proto.ServerToClient].Bytes(), data) || r.data[proto.ClientToServer].Len() != 0 {
		t.Fatal("stream differs")
	}
	if r.conn.Server().Port() != srvPort || r.conn.SYN {
		t.Fatalf("server %v", r.conn.Server())
	}
}

// TestTruncated: a packet whose IP length exceeds the capture contributes a
// gap of the missing tail at once.
func TestTruncated(t *testing.T) {
	h := newHarness(t, Config{})
	data := pattern(3000, 6)
	h.feed(pkt(t, true, 1, "PA", data[:1000]))
	p := pkt(t, true, 1001, "PA", data[1000:2000])
	h.feed(p[:len(p)-300]) // mirror cut 300 bytes
	h.feed(pkt(t, true, 2001, "PA", data[2000:]))
	h.tr.CloseAll(CloseShutdown)
	r := h.recs[0]
	if r.c2s.GapBytes != 300 || r.c2s.Truncated != 1 || r.events[0] != ReasonTruncated || r.c2s.BytesImplied != 3000 {
		t.Fatalf("loss %+v %v", r.c2s, r.events)
	}
	if r.data[proto.ClientToServer].Len() != 3000 {
		t.Fatal("length")
	}
}

// TestBounds: the connection cap evicts the least recently active
// connection and the buffer cap declares holes instead of growing.
func TestBounds(t *testing.T) {
	h := newHarness(t, Config{MaxConnections: 2, MaxBuffered: 5000, ReorderWindow: 1 << 20})
	// Three distinct connections by client port.
	for port := uint16(1); port <= 3; port++ {
		p := pkt(t, true, 1, "PA", []byte("hello"))
		p[14+20+1] = byte(port) // low byte of the TCP source port
		h.feed(p)
	}
	if h.tr.Conns() != 2 || h.tr.Evicted != 1 || h.recs[0].closed != CloseEvicted {
		t.Fatalf("conns %d evicted %d", h.tr.Conns(), h.tr.Evicted)
	}
	data := pattern(20000, 7)
	for off := 0; off < len(data); off += 1000 { // the second segment never arrives
		if off == 1000 {
			continue
		}
		h.feed(pkt(t, false, uint32(1+off), "PA", data[off:off+1000]))
		if h.tr.Buffered() > 6000 {
			t.Fatalf("buffered %d over cap", h.tr.Buffered())
		}
	}
	if h.tr.BufferCapHits == 0 {
		t.Fatal("buffer cap never hit")
	}
}

// TestIdleTimeout closes by capture time.
func TestIdleTimeout(t *testing.T) {
	h := newHarness(t, Config{IdleTimeout: time.Second})
	h.feed(pkt(t, true, 1, "PA", []byte("abc")))
	h.tr.Expire(h.nowNs + int64(2*time.Second))
	if h.recs[0].closed != CloseIdle || h.tr.Conns() != 0 {
		t.Fatalf("closed %q", h.recs[0].closed)
	}
}

// TestIdleOldCaptureTime: packets captured behind the tracker's clock (a
// redelivered batch, or a clock advanced by the wall time while frames
// were on their way) show their connection active at the clock: it is not
// expired before a full idle timeout of clock time.
func TestIdleOldCaptureTime(t *testing.T) {
	h := newHarness(t, Config{IdleTimeout: 10 * time.Second})
	h.feed(pkt(t, true, 1, "PA", []byte("abc")))
	h.feed(pkt(t, false, 1, "PA", []byte("de")))
	now := h.nowNs + int64(9*time.Second)
	h.tr.Expire(now)
	h.nowNs -= int64(5 * time.Second) // captured before the clock
	h.feed(pkt(t, true, 4, "PA", []byte("fgh")))
	h.tr.Expire(now + int64(9*time.Second))
	if h.recs[0].closed != "" || h.tr.Conns() != 1 {
		t.Fatalf("closed %q after 9 s of clock time", h.recs[0].closed)
	}
	h.tr.Expire(now + int64(11*time.Second))
	if h.recs[0].closed != CloseIdle || len(h.recs) != 1 {
		t.Fatalf("closed %q, %d connections", h.recs[0].closed, len(h.recs))
	}
	if got := h.recs[0].data[proto.ClientToServer].String(); got != "abcfgh" {
		t.Fatalf("stream %q", got)
	}
}

// FuzzTracker feeds arbitrary frames: no panic, bounded buffers.
func FuzzTracker(f *testing.F) {
	f.Add(pkt(f, true, 1, "PA", []byte("hello")), uint16(0))
	f.Add(pkt(f, false, 1, "S", nil), uint16(3))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		tr := New(Config{MaxConnections: 4, MaxBuffered: 1 << 16, ReorderWindow: 1 << 12}, func(c *Conn) Handler {
			return &rec{data: map[proto.Direction]*bytes.Buffer{proto.ClientToServer: {}, proto.ServerToClient: {}}, gaps: map[proto.Direction]int64{}}
		})
		for i := 0; i < 3; i++ {
			tr.Packet(&framebatch.Frame{TimeNs: int64(i), Link: flow.LinkEthernet, Data: b})
			if int(cut) < len(b) {
				tr.Packet(&framebatch.Frame{TimeNs: int64(i), Link: flow.LinkRaw, Data: b[cut:]})
			}
		}
		tr.CloseAll(CloseShutdown)
		if tr.Buffered() != 0 {
			t.Fatal("buffered after close")
		}
	})
}

// TestCausalOrder: the mirror delivers the server's response before the
// client's request (the two directions travel apart); the response
// acknowledges the request, so the request is delivered first.
func TestCausalOrder(t *testing.T) {
	h := newHarness(t, Config{})
	req, resp := []byte("GET / HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\n\r\n")
	h.feed(pktA(t, false, 900, 101, "SA", nil)) // SYN-ACK first
	h.feed(pkt(t, true, 100, "S", nil))
	h.feed(pktA(t, false, 901, 101+uint32(len(req)), "PA", resp))
	h.feed(pktA(t, true, 101, 901, "PA", req))
	h.feed(pktA(t, true, 101+uint32(len(req)), 901+uint32(len(resp)), "FA", nil))
	h.feed(pktA(t, false, 901+uint32(len(resp)), 102+uint32(len(req)), "FA", nil))
	r := h.recs[0]
	if len(r.order) != 2 || r.order[0] != proto.ClientToServer {
		t.Fatalf("delivery order %v, want c2s then s2c", r.order)
	}
	if r.data[proto.ServerToClient].String() != string(resp) || r.closed != CloseFIN || h.tr.Buffered() != 0 {
		t.Fatalf("resp %q closed %q buffered %d", r.data[proto.ServerToClient], r.closed, h.tr.Buffered())
	}
}

// TestCausalHoldBounded: when the acknowledged direction is not mirrored,
// the held output is released after the hold time and the hold is off for
// the rest of the connection.
func TestCausalHoldBounded(t *testing.T) {
	h := newHarness(t, Config{})
	h.feed(pktA(t, false, 900, 101, "SA", nil))
	h.feed(pktA(t, false, 901, 500, "PA", []byte("hello")))
	r := h.recs[0]
	if r.data[proto.ServerToClient].Len() != 0 {
		t.Fatal("not held")
	}
	h.tr.Expire(h.nowNs + int64(time.Second))
	if r.data[proto.ServerToClient].String() != "hello" || !r.conn.noCausal {
		t.Fatalf("not released: %q", r.data[proto.ServerToClient])
	}
	h.feed(pktA(t, false, 906, 900, "PA", []byte("world")))
	if r.data[proto.ServerToClient].String() != "helloworld" {
		t.Fatal("held again")
	}
}

// TestFinWithHole: both FINs seen but a segment before one of them never
// arrives: the connection closes after the grace time, the hole a gap.
func TestFinWithHole(t *testing.T) {
	h := newHarness(t, Config{})
	h.feed(pkt(t, true, 100, "S", nil))
	h.feed(pkt(t, true, 101, "PA", []byte("abc")))
	h.feed(pkt(t, true, 110, "PA", []byte("xyz"))) // 104..109 lost
	h.feed(pkt(t, true, 113, "FA", nil))
	h.feed(pkt(t, false, 500, "FA", nil))
	r := h.recs[0]
	if r.closed != "" {
		t.Fatalf("closed %q before the grace time", r.closed)
	}
	h.tr.Expire(h.nowNs + int64(2*time.Second))
	if r.closed != CloseFIN || r.c2s.GapBytes != 6 || r.data[proto.ClientToServer].String() != "abc??????xyz" {
		t.Fatalf("closed %q loss %+v data %q", r.closed, r.c2s, r.data[proto.ClientToServer])
	}
}

// floodTotals sums the loss accounts of every connection of h.
func floodTotals(h *harness) (seen, missing, gapBytes int64, jumps int) {
	for _, r := range h.recs {
		for _, l := range []Loss{r.c2s, r.s2c} {
			seen += l.BytesSeen
			missing += l.BytesImplied - l.BytesSeen
			gapBytes += l.GapBytes
		}
		if r.closed == CloseSeqJump {
			jumps++
		}
	}
	return
}

// TestSeqJumpFlood: 3000 segments of 8000 bytes, 16 MiB apart in sequence
// space and 1 ms apart in time, on one connection. No TCP window allows
// that: it is not 48 GiB of mirror loss. With the handshake seen (no
// window scaling: a 64 KiB window) every jump is one at once; without it,
// the loss reported is bounded by the largest window plus what the
// flow's rate allows in the time taken.
func TestSeqJumpFlood(t *testing.T) {
	const n, size, spacing = 3000, 8000, 16 << 20
	for _, hs := range []bool{true, false} {
		h := newHarness(t, Config{})
		if hs {
			h.feed(pkt(t, true, 99, "S", nil))
			h.feed(pkt(t, false, 899, "SA", nil))
		}
		data := pattern(size, 9)
		for i := 0; i < n; i++ {
			h.feed(pkt(t, true, uint32(100+i*spacing), "PA", data))
		}
		h.tr.CloseAll(CloseShutdown)
		seen, missing, gapBytes, jumps := floodTotals(h)
		if seen != n*size {
			t.Errorf("handshake %v: %d bytes seen, want %d", hs, seen, n*size)
		}
		// Without the handshake the first stream may claim up to the
		// largest window plus what the rate allows until its first jump
		// (about 64 ms here); after a jump the streams are held to an
		// unscaled window.
		bound := int64(0)
		if !hs {
			bound = DefaultMaxSeqJump + DefaultMaxFlowRate/5
		}
		if missing > bound || gapBytes > bound || jumps == 0 {
			t.Errorf("handshake %v: %d bytes missing (%d in gaps), %d sequence jumps; bound %d", hs, missing, gapBytes, jumps, bound)
		}
		t.Logf("handshake %v: %d connections, %d jumps, %d bytes missing", hs, len(h.recs), jumps, missing)
	}
}

// TestSeqJumpNotLoss: a real hole — mirror loss of 30 MB, more than the
// window, over the time it takes to send — is still a gap, and the bytes
// after it are delivered on the same connection.
func TestSeqJumpNotLoss(t *testing.T) {
	h := newHarness(t, Config{ReorderWindow: 1 << 12})
	h.feed(pkt(t, true, 99, "S", nil))
	h.feed(pkt(t, false, 899, "SA", nil))
	h.feed(pkt(t, true, 100, "PA", []byte("abcd")))
	h.nowNs += int64(20 * time.Millisecond) // 30 MB in 20 ms: 12 Gbit/s
	h.feed(pkt(t, true, 104+30e6, "PA", []byte("efgh")))
	h.feed(pkt(t, true, 108+30e6, "FA", nil))
	h.feed(pkt(t, false, 900, "FA", nil))
	if len(h.recs) != 1 || h.recs[0].closed != CloseFIN || h.recs[0].c2s.GapBytes != 30e6 {
		t.Fatalf("%d connections, closed %q, loss %+v", len(h.recs), h.recs[0].closed, h.recs[0].c2s)
	}
}

// TestResumeAfterEviction: a connection evicted at the table limit and
// then active again continues where it stopped: the new connection gets
// the old one's Carry, the same client, and its streams continue (bytes
// missing in between are one gap).
func TestResumeAfterEviction(t *testing.T) {
	h := newHarness(t, Config{MaxConnections: 1})
	h.feed(pkt(t, true, 99, "S", nil))
	h.feed(pkt(t, false, 899, "SA", nil))
	h.feed(pkt(t, true, 100, "PA", []byte("hello")))
	h.feed(pkt(t, false, 900, "PA", []byte("world")))
	h.recs[0].conn.Carry = "state of A"
	other := pkt(t, true, 5000, "PA", []byte("x"))
	other[26+3] = 9 // another client address: another connection
	h.feed(other)
	if h.recs[0].closed != CloseEvicted {
		t.Fatalf("closed %q", h.recs[0].closed)
	}
	h.feed(pkt(t, false, 905, "PA", []byte("again")))  // exactly where it stopped
	h.feed(pkt(t, true, 105+7, "PA", []byte("later"))) // 7 bytes never mirrored
	r := h.recs[len(h.recs)-1]
	if len(h.recs) != 3 || r.conn.Resumed != "state of A" || r.conn.Client().Port() != cliPort {
		t.Fatalf("%d connections, resumed %v, client %v", len(h.recs), r.conn.Resumed, r.conn.Client())
	}
	if !r.conn.Continued(proto.ClientToServer) || !r.conn.Continued(proto.ServerToClient) {
		t.Fatal("streams do not continue")
	}
	if got := r.data[proto.ServerToClient].String(); got != "again" {
		t.Fatalf("s2c %q", got)
	}
	if got := r.data[proto.ClientToServer].String(); got != "???????later" || len(r.events) != 1 || r.events[0] != ReasonResumed {
		t.Fatalf("c2s %q, gaps %v", got, r.events)
	}
}
