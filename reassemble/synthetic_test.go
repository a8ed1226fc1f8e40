package reassemble

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
)

// wsFrame encodes one WebSocket frame (FIN set); client frames are masked.
func wsFrame(op byte, payload []byte, masked bool) []byte {
	b := []byte{0x80 | op}
	mbit := byte(0)
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mbit|byte(n))
	case n < 1<<16:
		b = append(b, mbit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

const (
	upgradeReq  = "GET /feed HTTP/1.1\r\nHost: prod.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	upgradeResp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)

// wsScenario is a WebSocket conversation cut into TCP segments.
type wsScenario struct {
	c2sMsgs, s2cMsgs [][]byte
	c2s, s2c         []byte // the two byte streams after the handshake
	msgStart         []int  // s2c stream offset of each server message
}

func newWSScenario(n int) *wsScenario {
	s := &wsScenario{}
	for i := 0; i < n; i++ {
		cm := []byte(fmt.Sprintf(`{"req":%d,"pad":"%s"}`, i, bytes.Repeat([]byte{'x'}, 50*i)))
		sm := pattern(300+997*i, byte(i))
		s.c2sMsgs, s.s2cMsgs = append(s.c2sMsgs, cm), append(s.s2cMsgs, sm)
		s.c2s = append(s.c2s, wsFrame(1, cm, true)...)
		s.msgStart = append(s.msgStart, len(s.s2c))
		s.s2c = append(s.s2c, wsFrame(2, sm, false)...)
	}
	return s
}

// segs cuts b into segments of at most n bytes: (offset, bytes).
type tcpSeg struct {
	client bool
	off    int
	b      []byte
}

func cut(client bool, base int, b []byte, n int) []tcpSeg {
	var out []tcpSeg
	for off := 0; off < len(b); off += n {
		out = append(out, tcpSeg{client, base + off, b[off:min(off+n, len(b))]})
	}
	return out
}

// runSegments publishes the connection's packets (handshake optional) and
// returns what the messages stream holds for it.
func runSegments(t *testing.T, withSYN bool, pre []tcpSeg, segs []tcpSeg, fin bool) *connOut {
	c, _ := runSegmentsReg(t, withSYN, pre, segs, fin)
	return c
}

func runSegmentsReg(t *testing.T, withSYN bool, pre []tcpSeg, segs []tcpSeg, fin bool) (*connOut, *prometheus.Registry) {
	t.Helper()
	return runSegmentsAt(t, "10.9.0.1:51000", "10.9.0.2:443", withSYN, pre, segs, fin)
}

// runSegmentsAt is runSegmentsReg between the given client and server.
func runSegmentsAt(t *testing.T, cli, srv string, withSYN bool, pre []tcpSeg, segs []tcpSeg, fin bool) (*connOut, *prometheus.Registry) {
	t.Helper()
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	cfg := testConfig(url, 2, "synthetic")
	cfg.NewDecoder = nil
	cfg.ReorderWindow = 64 << 10
	_, reg := startEngineReg(t, cfg)
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(t, cli, srv, 5, &clock)
	b := newBatcher(t, js, 4)
	isn := c.seq
	send := func(f framebatch.Frame) { b.add(&f, shardOf(t, &f, 2)) }
	if withSYN {
		send(c.frame(true, "S", nil))
		send(c.frame(false, "SA", nil))
		isn = c.seq
	}
	for _, s := range append(pre, segs...) {
		i := 1
		if s.client {
			i = 0
		}
		c.seq[i] = isn[i] + uint32(s.off)
		send(c.frame(s.client, "PA", s.b))
	}
	if fin {
		var end [2]int
		for _, s := range append(pre, segs...) {
			i := 1
			if s.client {
				i = 0
			}
			end[i] = max(end[i], s.off+len(s.b))
		}
		for i, client := range []bool{true, false} {
			c.seq[i] = isn[i] + uint32(end[i])
			send(c.frame(client, "FA", nil))
		}
	}
	b.flush()
	waitFor(t, "close", func() bool { return len(col.closed()) >= 1 })
	cs := col.closed()
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	if len(cs) != 1 {
		t.Fatalf("%d connections", len(cs))
	}
	return cs[0], reg
}

func handshake() []tcpSeg {
	return []tcpSeg{{true, 0, []byte(upgradeReq)}, {false, 0, []byte(upgradeResp)}}
}

// shift moves stream offsets past the handshake.
func shift(segs []tcpSeg) []tcpSeg {
	for i := range segs {
		if segs[i].client {
			segs[i].off += len(upgradeReq)
		} else {
			segs[i].off += len(upgradeResp)
		}
	}
	return segs
}

func checkMessages(t *testing.T, c *connOut, dir proto.Direction, want [][]byte, from int) {
	t.Helper()
	var got []*gotMsg
	for _, m := range c.msgs[dir] {
		if m.opcode == proto.OpText || m.opcode == proto.OpBinary {
			got = append(got, m)
		}
	}
	if len(got) != len(want)-from {
		t.Fatalf("%s: %d messages, want %d", dir, len(got), len(want)-from)
	}
	for i, m := range got {
		if !m.complete || !bytes.Equal(m.body, want[from+i]) {
			t.Errorf("%s #%d: complete %v, %d B, want %d B", dir, i, m.complete, len(m.body), len(want[from+i]))
		}
	}
}

// TestSyntheticReorderDuplicates: segments shuffled within a small window
// and some sent twice give every message exactly.
func TestSyntheticReorderDuplicates(t *testing.T) {
	s := newWSScenario(12)
	segs := append(cut(true, 0, s.c2s, 700), cut(false, 0, s.s2c, 1400)...)
	rng := rand.New(rand.NewSource(7))
	var mixed []tcpSeg
	for _, sg := range segs {
		mixed = append(mixed, sg)
		if rng.Intn(4) == 0 {
			mixed = append(mixed, sg)
		}
	}
	for i := 0; i < len(mixed); i += 6 {
		w := mixed[i:min(i+6, len(mixed))]
		rng.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
	}
	c := runSegments(t, true, handshake(), shift(mixed), true)
	if c.open == nil || c.open.Protocol != "websocket" || c.open.Path != "/feed" || c.open.Host != "prod.example" {
		t.Fatalf("open %+v", c.open)
	}
	checkMessages(t, c, proto.ClientToServer, s.c2sMsgs, 0)
	checkMessages(t, c, proto.ServerToClient, s.s2cMsgs, 0)
	if len(c.gaps) != 0 || c.closeEv.Reason != "fin" || c.closeEv.S2C.BytesMissing != 0 {
		t.Fatalf("gaps %v close %+v", c.gaps, c.closeEv)
	}
}

// TestSyntheticDroppedSegment: a segment inside server message 5 never
// arrives: one gap event of its size, message 5 incomplete with the
// missing count, every other message exact.
func TestSyntheticDroppedSegment(t *testing.T) {
	s := newWSScenario(10)
	lost := s.msgStart[5] + 1000
	var segs []tcpSeg
	segs = append(segs, tcpSeg{false, 0, s.s2c[:lost]})
	segs = append(segs, cut(false, lost+500, s.s2c[lost+500:], 1400)...)
	segs = append(segs, cut(true, 0, s.c2s, 1400)...)
	c, reg := runSegmentsReg(t, true, handshake(), shift(segs), true)
	if len(c.gaps) != 1 || c.gaps[0].Bytes != 500 || c.gaps[0].Dir != proto.ServerToClient || c.gaps[0].Offset != int64(len(upgradeResp)+lost) {
		t.Fatalf("gaps %+v", c.gaps)
	}
	var got []*gotMsg
	for _, m := range c.msgs[proto.ServerToClient] {
		got = append(got, m)
	}
	if len(got) != 10 {
		t.Fatalf("%d server messages", len(got))
	}
	for i, m := range got {
		if i == 5 {
			if m.complete {
				t.Errorf("message 5 touched by the gap is complete")
			}
			continue
		}
		if !m.complete || !bytes.Equal(m.body, s.s2cMsgs[i]) {
			t.Errorf("message %d: complete %v %d B", i, m.complete, len(m.body))
		}
	}
	waitFor(t, "metrics", func() bool {
		return metricValue(t, reg, "tapline_reassemble_gap_bytes_total", map[string]string{"vni": "5"}) == 500
	})
	if v := metricValue(t, reg, "tapline_reassemble_incomplete_messages_total", map[string]string{"dir": "s2c"}); v != 1 {
		t.Errorf("incomplete messages metric %v", v)
	}
	if v := metricValue(t, reg, "tapline_reassemble_messages_total", map[string]string{"dir": "s2c", "opcode": "binary", "complete": "true"}); v != 9 {
		t.Errorf("complete s2c binary messages metric %v", v)
	}
	l := c.closeEv.S2C
	if l.BytesMissing != 500 || l.Gaps != 1 || l.MessagesIncomplete != 1 || l.BytesImplied != int64(len(upgradeResp)+len(s.s2c)) {
		t.Fatalf("loss summary %+v", l)
	}
}

// TestSyntheticOneDirection: inbound-only mirroring of the server's side,
// no SYN, no ACKs, handshake response included.
func TestSyntheticOneDirection(t *testing.T) {
	s := newWSScenario(8)
	segs := append([]tcpSeg{{false, 0, []byte(upgradeResp)}}, shift(cut(false, 0, s.s2c, 1400))...)
	c := runSegments(t, false, nil, segs, true)
	if c.open == nil || c.open.Protocol != "websocket" {
		t.Fatalf("open %+v", c.open)
	}
	if c.client != "10.9.0.1:51000" || c.server != "10.9.0.2:443" {
		t.Fatalf("client %s server %s", c.client, c.server)
	}
	checkMessages(t, c, proto.ServerToClient, s.s2cMsgs, 0)
	if len(c.msgs[proto.ClientToServer]) != 0 || len(c.gaps) != 0 {
		t.Fatalf("c2s %d gaps %v", len(c.msgs[proto.ClientToServer]), c.gaps)
	}
}

// TestSyntheticMidStream: mirroring starts in the middle of server message
// 3 of an established WebSocket connection (no SYN, no handshake): the
// messages from the next frame boundary are published exactly.
func TestSyntheticMidStream(t *testing.T) {
	s := newWSScenario(10)
	start := s.msgStart[3] + 17
	segs := cut(false, 0, s.s2c[start:], 1400)
	segs = append(segs, cut(true, 0, s.c2s, 1000)...)
	c := runSegments(t, false, nil, segs, false)
	if c.open == nil || !c.open.MidStream {
		t.Fatalf("open %+v", c.open)
	}
	// The decoder may give up the first few frames of a resynchronised
	// chain (weak evidence): what it publishes complete is the tail.
	checkTail(t, c, proto.ServerToClient, s.s2cMsgs[4:], 3)
	checkMessages(t, c, proto.ClientToServer, s.c2sMsgs, 0)
	if c.closeEv.Reason != "idle" {
		t.Fatalf("close %+v", c.closeEv)
	}
}

// TestSyntheticMidStreamServerOnHigherPort: as TestSyntheticMidStream, but
// the server listens on a higher port than the client's (the guess from
// the ports is wrong) and its bytes come first, several segments in one
// batch. The decoder learns the client from the first frames while the
// TLS layer hands it what it held to rule out TLS records; the segments
// after the first must stay the server's, not be read as the client's.
// (Seen end to end: the second message after mirroring started mid-stream
// was a 17-byte binary cut from the first frames.)
func TestSyntheticMidStreamServerOnHigherPort(t *testing.T) {
	// Text messages: their first frames verify the boundary within the
	// bytes the TLS layer holds (about 16 KiB) before it decides.
	var msgs [][]byte
	var s2c []byte
	for i := range 60 {
		m := []byte(fmt.Sprintf(`{"type":"quote","n":%d,"pad":"%s"}`, i, bytes.Repeat([]byte{'q'}, 400+37*i)))
		msgs = append(msgs, m)
		s2c = append(s2c, wsFrame(1, m, false)...)
	}
	segs := cut(false, 0, s2c, 1400)
	c, _ := runSegmentsAt(t, "10.9.0.1:42264", "10.9.0.2:42799", false, nil, segs, false)
	if c.open == nil || !c.open.MidStream {
		t.Fatalf("open %+v", c.open)
	}
	if c.client != "10.9.0.1:42264" || c.server != "10.9.0.2:42799" {
		t.Fatalf("client %s server %s", c.client, c.server)
	}
	if n := len(c.msgs[proto.ClientToServer]); n != 0 {
		t.Errorf("%d messages from the client, which sent none", n)
	}
	checkTail(t, c, proto.ServerToClient, msgs, 0)
	if c.incomplete != 0 {
		t.Fatalf("%d incomplete messages", c.incomplete)
	}

	// A segment lost before the decision: its gap event is the server's.
	lost := append(append([]tcpSeg(nil), segs[:3]...), segs[4:]...)
	c, _ = runSegmentsAt(t, "10.9.0.1:42264", "10.9.0.2:42799", false, nil, lost, false)
	if c.client != "10.9.0.1:42264" {
		t.Fatalf("with a gap: client %s server %s", c.client, c.server)
	}
	if len(c.gaps) != 1 || c.gaps[0].Dir != proto.ServerToClient || c.gaps[0].Bytes != int64(len(segs[3].b)) {
		t.Fatalf("gap events %+v, want one of the server's %d bytes", c.gaps, len(segs[3].b))
	}
	if n := len(c.msgs[proto.ClientToServer]); n != 0 {
		t.Errorf("with a gap: %d messages from the client, which sent none", n)
	}
}

// checkTail requires the complete data messages of dir to be the last ones
// of want, exactly, with at most slack of them missing at the front.
func checkTail(t *testing.T, c *connOut, dir proto.Direction, want [][]byte, slack int) {
	t.Helper()
	var got []*gotMsg
	for _, m := range c.msgs[dir] {
		if (m.opcode == proto.OpText || m.opcode == proto.OpBinary) && m.complete {
			got = append(got, m)
		}
	}
	if len(got) < len(want)-slack || len(got) > len(want) {
		t.Fatalf("%s: %d complete messages, want %d (at most %d fewer)", dir, len(got), len(want), slack)
	}
	tail := want[len(want)-len(got):]
	for i, m := range got {
		if !bytes.Equal(m.body, tail[i]) {
			t.Errorf("%s #%d: %d B differ from the message sent", dir, i, len(m.body))
		}
	}
}
