// Package tcp reassembles the TCP byte streams of mirrored connections.
//
// A Tracker follows every connection of one shard, keyed by VNI and
// 5-tuple, and turns its packets into in-order stream bytes and explicit
// gaps per direction. It is built for mirrored traffic: either or both
// directions may be mirrored (inbound-only sessions show no SYN-ACK and no
// ACKs), mirroring may start in the middle of a connection, packets may be
// retransmitted, duplicated, overlapping, reordered (within a bounded
// window) or lost, and the mirror may truncate them. Checksums are never
// checked: mirrored packets often carry uncomputed ones.
//
// Memory is bounded: out-of-order data per direction by the reorder
// window, all held data by MaxBuffered, connections by MaxConnections
// (the least recently active is evicted). Whatever exceeds a bound becomes
// a counted gap or close, never an error.
package tcp

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// Config bounds a Tracker.
type Config struct {
	MaxConnections int           // connections tracked at once; past it the least recently active is evicted
	MaxBuffered    int64         // out-of-order bytes held over all connections
	ReorderWindow  int           // bytes held ahead of a hole in one direction before the hole is declared lost
	IdleTimeout    time.Duration // a connection without packets for this long (capture time) is closed
	// MaxSeqJump bounds the bytes a direction may have in flight (the
	// receiver's window) when the window is not known from the handshake
	// (default 1 GiB, the largest TCP window). See Conn.jump.
	MaxSeqJump int64
	// MaxFlowRate is the fastest a direction of one connection can send,
	// in bytes per second (default 25 Gbit/s). See Conn.jump.
	MaxFlowRate int64
	// MaxMemory bounds the bytes charged for all connections and what
	// they hold (0: no bound); see Sizer. ConnCost is the fixed charge
	// per connection (default DefaultConnCost).
	MaxMemory int64
	ConnCost  int64
}

// Close reasons.
const (
	CloseFIN      = "fin"
	CloseRST      = "rst"
	CloseIdle     = "idle"
	CloseEvicted  = "evicted"
	CloseShutdown = "shutdown"
	CloseReused   = "reused" // a new SYN on the 5-tuple of a connection with data
	// CloseSeqJump: a packet's sequence number is further from what its
	// direction sent before than TCP allows (see Conn.jump): not mirror
	// loss but another stream on the 5-tuple. The packet opens a new
	// connection, which resumes this one (Conn.Resumed).
	CloseSeqJump = "seq_jump"
)

// Handler receives a connection's stream in order. Dir is relative to the
// connection's current client/server assignment (see Conn.SwapDirections).
type Handler interface {
	Data(dir proto.Direction, b []byte, tsNs int64)
	Gap(dir proto.Direction, offset, n int64, tsNs int64, reason string)
	Close(reason string, tsNs int64, c2s, s2c Loss)
}

// Opener creates the Handler of a new connection.
type Opener func(c *Conn) Handler

// key names a connection independently of packet direction: endpoint a is
// the lower one.
type key struct {
	vni    uint32
	a, b   netip.Addr
	ap, bp uint16
}

// Conn is one tracked connection.
type Conn struct {
	k        key
	ID       string // stable id: vni, first endpoint, second endpoint, first capture ns
	VNI      uint32
	First    netip.AddrPort // the sender of the first packet seen
	Second   netip.AddrPort
	FirstNs  int64
	LastNs   int64  // capture time of the latest packet (never moves back)
	LastPos  uint64 // the caller's position (Tracker.SetPos) of its latest packet
	activeNs int64  // the tracker's clock at its latest packet: what idle is measured from
	SYN      bool   // the connection's opening (SYN) was seen, so client and server are known
	Mid      bool   // the start was not seen (first packet carried data without SYN)
	clientIx int    // index into halves of the client's half
	halves   [2]half
	sinks    [2]halfSink
	h        Handler
	User     any // for the Handler's owner
	// Carry is set by the Handler (at the latest in its Close): when the
	// connection closes idle, evicted or by a sequence jump, it is kept
	// with the connection's sequence state and handed to the connection
	// that later continues it on the same 5-tuple, as Resumed.
	Carry any
	// Resumed is the Carry of the connection this one continues (nil: a
	// connection of its own). Set before the Opener is called.
	Resumed any

	prev, next *Conn // LRU list, most recent at head
	closed     bool
	noCausal   bool   // the causal hold is off: the other direction is not mirrored
	finAt      int64  // capture time all FINs were seen (0: not yet)
	jumpIx     int    // 1 + the half whose sequence jumped (0: none)
	mem        int64  // the Handler's Memory at its last measure
	endReason  string // set by the Handler (End): close after this packet
}

// Continued reports whether direction dir of a resumed connection
// continues its predecessor's stream exactly where it stopped (the first
// bytes delivered follow the predecessor's last ones, or a gap says how
// many are missing between them).
func (c *Conn) Continued(dir proto.Direction) bool {
	ix := c.clientIx
	if dir == proto.ServerToClient {
		ix ^= 1
	}
	return c.halves[ix].resumeOK
}

// Client returns the client's address (known from the SYN, else guessed).
func (c *Conn) Client() netip.AddrPort {
	if c.clientIx == 0 {
		return c.First
	}
	return c.Second
}

// Server returns the server's address.
func (c *Conn) Server() netip.AddrPort {
	if c.clientIx == 0 {
		return c.Second
	}
	return c.First
}

// SwapDirections exchanges client and server for everything that follows.
func (c *Conn) SwapDirections() { c.clientIx ^= 1 }

func (c *Conn) dir(ix int) proto.Direction {
	if ix == c.clientIx {
		return proto.ClientToServer
	}
	return proto.ServerToClient
}

// Stats are a Tracker's counters since it was created.
type Stats struct {
	Packets, NotTCP, Fragments, Malformed int64
	Opened, Closed, Evicted               int64
	BufferCapHits                         int64
	Held                                  int64 // bytes held by the causal hold (one direction waiting for the other)
	Ignored                               int64 // packets of no tracked connection without payload, or late after its close
	SeqJumps                              int64 // connections closed by a sequence jump
	Resumed                               int64 // connections opened as the continuation of one closed idle, evicted or by a jump
	MemEvicted                            int64 // connections closed to stay within MaxMemory (reason memory)
	GoneDropped                           int64 // resume records forgotten to stay within MaxMemory
	Skipped                               int64 // packets a Record said were processed by the previous tracker
}

// lateAfterClose is how long (capture time) after a FIN or RST close packets
// of the same 5-tuple without SYN are taken as stragglers, not a new
// connection.
const lateAfterClose = 30 * time.Second

// Tracker follows the connections of one shard. Not safe for concurrent
// use.
type Tracker struct {
	cfg      Config
	open     Opener
	conns    map[key]*Conn
	tomb     map[key]int64      // recently closed by FIN/RST: close time
	gone     map[key]*gone      // closed idle, evicted or by a jump: what a continuation resumes
	goneQ    []key              // gone keys in the order they were added (bounded by MaxConnections)
	waiting  map[*Conn]struct{} // connections with held output
	finWait  map[*Conn]struct{} // connections past their FINs, with holes
	head     *Conn              // most recently active
	tail     *Conn
	buffered int64
	nowNs    int64
	pos      uint64         // position of the current packet (SetPos)
	skip     map[key]uint64 // from Restore: packets up to this position were processed already

	handlerMem int64 // sum of the connections' Handler Memory
	goneMem    int64 // charge of the resume records

	Stats
}

// DefaultIdleTimeout is the idle timeout of a Config that leaves it zero:
// long enough for mostly silent WebSockets that push rarely.
const DefaultIdleTimeout = 6 * time.Hour

// New returns a Tracker that calls open for each new connection.
func New(cfg Config, open Opener) *Tracker {
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 100000
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = 256 << 20
	}
	if cfg.ReorderWindow <= 0 {
		cfg.ReorderWindow = 1 << 20
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxSeqJump <= 0 {
		cfg.MaxSeqJump = DefaultMaxSeqJump
	}
	if cfg.MaxFlowRate <= 0 {
		cfg.MaxFlowRate = DefaultMaxFlowRate
	}
	if cfg.ConnCost <= 0 {
		cfg.ConnCost = DefaultConnCost
	}
	return &Tracker{cfg: cfg, open: open, conns: make(map[key]*Conn), tomb: make(map[key]int64), gone: make(map[key]*gone), skip: make(map[key]uint64), waiting: make(map[*Conn]struct{}), finWait: make(map[*Conn]struct{})}
}

// Conns returns the number of connections tracked.
func (t *Tracker) Conns() int { return len(t.conns) }

// Buffered returns the out-of-order bytes held.
func (t *Tracker) Buffered() int64 { return t.buffered }

// halfSink adapts a connection half to the Handler.
type halfSink struct {
	t    *Tracker
	c    *Conn
	ix   int
	ts   int64
	hold bool
}

func (s *halfSink) data(b []byte) {
	if h := &s.c.halves[s.ix]; s.hold || len(h.wait) > 0 {
		s.queue(h, heldOut{data: append([]byte(nil), b...), ts: s.ts}, int64(len(b)))
		return
	}
	s.c.h.Data(s.c.dir(s.ix), b, s.ts)
}

func (s *halfSink) gap(off, n int64, reason string) {
	if h := &s.c.halves[s.ix]; s.hold || len(h.wait) > 0 {
		s.queue(h, heldOut{off: off, n: n, reason: reason, ts: s.ts}, n)
		return
	}
	s.c.h.Gap(s.c.dir(s.ix), off, n, s.ts, reason)
}

func (s *halfSink) queue(h *half, o heldOut, n int64) {
	if len(h.wait) == 0 {
		h.waitSince = s.ts
		s.t.waiting[s.c] = struct{}{}
	}
	h.wait = append(h.wait, o)
	h.waitBytes += n
	s.t.buffered += int64(len(o.data))
	s.t.Held += int64(len(o.data))
}

// causalHold is how long (capture time) output of one direction waits for
// the other direction's bytes it acknowledges; causalMaxBytes bounds what
// one direction holds.
const (
	causalHold     = 100 * time.Millisecond
	causalMaxBytes = 1 << 20
)

// holdFor decides whether the output of segment s, sent by half ix, must
// wait: it acknowledges bytes of the other direction that have not been
// delivered yet (the mirror reordered the two directions, e.g. a response
// reassembled before its request).
func (c *Conn) holdFor(ix int, s *segment) bool {
	if c.noCausal || s.flags&flagACK == 0 || len(s.data)+s.lost == 0 {
		return false
	}
	x, y := &c.halves[ix], &c.halves[ix^1]
	var yNext uint32
	switch {
	case y.started:
		yNext = y.next - uint32(y.waitBytes)
	case x.peerKnown:
		yNext = x.peerNext
	default:
		return false
	}
	if seqDiff(s.ack, yNext) <= 0 {
		return false
	}
	if len(x.wait) == 0 || seqDiff(s.ack, x.waitAck) > 0 {
		x.waitAck = s.ack
	}
	return true
}

// release delivers held output whose condition is met (or all of it when
// force), repeating while something was released.
func (t *Tracker) release(c *Conn, force bool) {
	for changed := true; changed; {
		changed = false
		for ix := range c.halves {
			x, y := &c.halves[ix], &c.halves[ix^1]
			if len(x.wait) == 0 {
				continue
			}
			caught := y.started && seqDiff(y.next-uint32(y.waitBytes), x.waitAck) >= 0
			expired := t.nowNs-x.waitSince > int64(causalHold) || x.waitBytes > causalMaxBytes || t.buffered > t.cfg.MaxBuffered
			if !force && !caught && !expired {
				continue
			}
			if expired && !caught && !y.seen {
				c.noCausal = true // the other direction is not mirrored
			}
			w := x.wait
			x.wait, x.waitBytes = nil, 0
			d := c.dir(ix)
			for _, o := range w {
				t.buffered -= int64(len(o.data))
				if o.data != nil {
					c.h.Data(d, o.data, o.ts)
				} else {
					c.h.Gap(d, o.off, o.n, o.ts, o.reason)
				}
			}
			changed = true
		}
	}
	if len(c.halves[0].wait) == 0 && len(c.halves[1].wait) == 0 {
		delete(t.waiting, c)
	}
	t.measure(c)
}

// Packet processes one frame. It returns the connection the frame belongs
// to (nil when the frame is not TCP or is malformed; such frames are
// counted in Stats).
func (t *Tracker) Packet(f *framebatch.Frame) *Conn {
	t.Packets++
	fk, err := flow.Parse(f.Link, f.Data)
	if err != nil {
		if err == flow.ErrNotIP {
			t.NotTCP++
		} else {
			t.Malformed++
		}
		return nil
	}
	s, err := parseSegment(&fk, f.Data)
	switch err {
	case nil:
	case errNotTCP:
		t.NotTCP++
		return nil
	case errFragment:
		t.Fragments++
		return nil
	default:
		t.Malformed++
		return nil
	}
	if f.TimeNs > t.nowNs {
		t.nowNs = f.TimeNs
	}
	src := netip.AddrPortFrom(fk.Src, fk.SrcPort)
	dst := netip.AddrPortFrom(fk.Dst, fk.DstPort)
	k := key{vni: f.VNI, a: fk.Src, ap: fk.SrcPort, b: fk.Dst, bp: fk.DstPort}
	if c := fk.Src.Compare(fk.Dst); c > 0 || (c == 0 && fk.SrcPort > fk.DstPort) {
		k.a, k.ap, k.b, k.bp = k.b, k.bp, k.a, k.ap
	}
	if p, ok := t.skip[k]; ok && t.pos <= p {
		t.Skipped++ // the previous tracker of the shard processed it (Restore)
		return nil
	}
	c := t.conns[k]
	syn := s.flags&flagSYN != 0 && s.flags&flagACK == 0
	if c != nil && c.jump(t, c.ix(src), &s, f.TimeNs) {
		t.SeqJumps++
		c.jumpIx = 1 + c.ix(src)
		t.close(c, CloseSeqJump, t.nowNs)
		c = nil
	}
	if c != nil && syn && c.hasData() && c.halves[c.ix(src)].newSYN(s.seq) {
		t.close(c, CloseReused, f.TimeNs)
		c = nil
	}
	if c == nil && !syn && s.flags&flagSYN == 0 {
		if len(s.data)+s.lost == 0 {
			t.Ignored++ // a bare ACK, FIN or RST of a connection not tracked
			return nil
		}
		if at, ok := t.tomb[k]; ok && f.TimeNs-at < int64(lateAfterClose) {
			t.Ignored++ // a late retransmission of a connection that ended
			return nil
		}
	}
	if c == nil {
		g := t.forget(k) // taken before an eviction can make room for another
		if len(t.conns) >= t.cfg.MaxConnections && t.tail != nil {
			t.Evicted++
			t.close(t.tail, CloseEvicted, f.TimeNs)
		}
		t.enforce(nil, t.cfg.ConnCost)
		c = t.newConn(k, f, src, dst, &s, g)
	} else {
		t.touch(c)
	}
	// A packet captured before the tracker's clock (a redelivered batch,
	// or a clock advanced by the wall time while frames were on their way)
	// still shows the connection active now: idle time is measured from
	// the clock, never from an older capture time, so the connections stay
	// in the order of their activity and none is expired early.
	c.LastNs = max(c.LastNs, f.TimeNs)
	c.LastPos = t.pos
	c.activeNs = t.nowNs
	ix := c.ix(src)
	h := &c.halves[ix]
	h.seen = true
	if s.flags&flagSYN != 0 && s.flags&flagACK != 0 {
		// A SYN-ACK names the other direction's first sequence number.
		h.peerNext, h.peerKnown = s.ack, true
	}
	if h.originTs == 0 {
		h.originTs = f.TimeNs
	}
	sk := &c.sinks[ix]
	sk.t, sk.c, sk.ix, sk.ts = t, c, ix, f.TimeNs
	sk.hold = c.holdFor(ix, &s)
	if n := len(s.data) + s.lost; h.resumed && n > 0 {
		// The first data of a resumed stream: bytes between where the
		// predecessor stopped and this packet are known lost now (no
		// reordered packet of an idle connection is expected).
		h.resumed = false
		if d := seqDiff(s.seq, h.next); d > 0 {
			h.skip(d, ReasonResumed, sk)
		}
	}
	h.add(t, &s, sk)
	sk.hold = false
	h.reach(&s, f.TimeNs)
	if len(t.waiting) > 0 {
		if _, ok := t.waiting[c]; ok {
			t.release(c, false)
		}
	}
	if s.flags&flagRST != 0 {
		t.close(c, CloseRST, f.TimeNs)
		return c
	}
	t.measure(c)
	t.enforce(c, 0)
	if c.closed || t.closeEnded(c) {
		return c
	}
	if c.finished() {
		t.close(c, CloseFIN, f.TimeNs)
	} else if c.finAt == 0 && c.finSeen() {
		// Every direction sent its FIN but a hole keeps one from
		// reaching it: wait a little for reordered bytes, then close.
		c.finAt = t.nowNs
		t.finWait[c] = struct{}{}
	}
	return c
}

// finSeen reports that every direction seen has sent its FIN.
func (c *Conn) finSeen() bool {
	any := false
	for i := range c.halves {
		h := &c.halves[i]
		if !h.seen {
			continue
		}
		if !h.finSet {
			return false
		}
		any = true
	}
	return any
}

// finGrace is how long (capture time) a connection whose FINs were all
// seen waits for the bytes of its holes before it is closed.
const finGrace = time.Second

func (c *Conn) ix(src netip.AddrPort) int {
	if src == c.First {
		return 0
	}
	return 1
}

// newSYN reports whether a SYN with sequence number seq opens a new
// connection on this 5-tuple rather than being a retransmission.
func (h *half) newSYN(seq uint32) bool {
	if !h.started {
		return false
	}
	if h.syn {
		return seq != h.isn
	}
	return seqDiff(seq+1, h.start) > 0
}

func (c *Conn) hasData() bool {
	return c.halves[0].offset > 0 || c.halves[1].offset > 0 || len(c.halves[0].bufs) > 0 || len(c.halves[1].bufs) > 0
}

// finished reports that every direction seen has reached its FIN.
func (c *Conn) finished() bool {
	any := false
	for i := range c.halves {
		h := &c.halves[i]
		if !h.seen {
			continue
		}
		if !h.done {
			return false
		}
		any = true
	}
	return any
}

func (t *Tracker) newConn(k key, f *framebatch.Frame, src, dst netip.AddrPort, s *segment, g *gone) *Conn {
	c := &Conn{k: k, VNI: f.VNI, First: src, Second: dst, FirstNs: f.TimeNs, LastNs: f.TimeNs, activeNs: t.nowNs}
	switch {
	case s.flags&flagSYN != 0 && s.flags&flagACK == 0:
		c.SYN, c.clientIx = true, 0
	case s.flags&flagSYN != 0:
		c.SYN, c.clientIx = true, 1 // SYN-ACK: the sender is the server
	default:
		c.Mid = true
		// Guess: the lower port is the server's.
		if src.Port() < dst.Port() {
			c.clientIx = 1
		}
	}
	c.ID = strconv.FormatUint(uint64(f.VNI), 10) + "_" + src.String() + "_" + dst.String() + "_" + strconv.FormatInt(f.TimeNs, 10)
	if g != nil && !c.SYN {
		t.resume(c, g)
	}
	t.conns[k] = c
	t.Opened++
	t.pushFront(c)
	c.h = t.open(c)
	t.measure(c)
	return c
}

// close flushes both directions (declaring remaining holes lost), tells the
// handler, and forgets the connection.
func (t *Tracker) close(c *Conn, reason string, tsNs int64) {
	if c.closed {
		return
	}
	c.closed = true
	t.release(c, true)
	for ix := range c.halves {
		sk := &c.sinks[ix]
		sk.t, sk.c, sk.ix, sk.ts, sk.hold = t, c, ix, tsNs, false
		c.halves[ix].flush(t, sk)
	}
	delete(t.conns, c.k)
	delete(t.finWait, c)
	t.unlink(c)
	t.forget(c.k)
	if reason == CloseFIN || reason == CloseRST || reason == c.endReason {
		if len(t.tomb) >= t.cfg.MaxConnections {
			clear(t.tomb)
		}
		t.tomb[c.k] = tsNs
	}
	t.Closed++
	l0, l1 := c.halves[0].final(), c.halves[1].final()
	if c.clientIx == 1 {
		l0, l1 = l1, l0
	}
	c.h.Close(reason, tsNs, l0, l1)
	t.handlerMem -= c.mem
	c.mem = 0
	if reason == CloseIdle || reason == CloseEvicted || reason == CloseMemory || reason == CloseSeqJump {
		t.bury(c, tsNs)
	}
}

// Expire closes connections idle for longer than the idle timeout, judged
// by the tracker's clock: the latest capture time seen, or nowNs when that
// is later (the caller's estimate of the capture time now, e.g. the
// capture time of the last packet plus the wall time since it). The clock
// never moves back; pass an estimate, never a sum of estimates. It returns
// the number closed.
func (t *Tracker) Expire(nowNs int64) int {
	if nowNs > t.nowNs {
		t.nowNs = nowNs
	}
	for c := range t.waiting {
		t.release(c, false)
		t.closeEnded(c)
	}
	t.enforce(nil, 0)
	for c := range t.finWait {
		if t.nowNs-c.finAt > int64(finGrace) {
			t.close(c, CloseFIN, t.nowNs)
		}
	}
	n := 0
	limit := t.nowNs - int64(t.cfg.IdleTimeout)
	for t.tail != nil && t.tail.activeNs < limit {
		t.close(t.tail, CloseIdle, t.nowNs)
		n++
	}
	for k, at := range t.tomb {
		if t.nowNs-at > int64(lateAfterClose) {
			delete(t.tomb, k)
		}
	}
	return n
}

// Now returns the tracker's clock: the latest capture time it has seen.
func (t *Tracker) Now() int64 { return t.nowNs }

// CloseIf closes the connections for which match returns true, with reason.
func (t *Tracker) CloseIf(match func(c *Conn) bool, reason string) {
	var sel []*Conn
	for c := t.head; c != nil; c = c.next {
		if match(c) {
			sel = append(sel, c)
		}
	}
	for _, c := range sel {
		t.close(c, reason, t.nowNs)
	}
}

// CloseAll closes every connection with reason (e.g. CloseShutdown).
func (t *Tracker) CloseAll(reason string) {
	for t.tail != nil {
		t.close(t.tail, reason, t.nowNs)
	}
}

func (t *Tracker) pushFront(c *Conn) {
	c.prev, c.next = nil, t.head
	if t.head != nil {
		t.head.prev = c
	}
	t.head = c
	if t.tail == nil {
		t.tail = c
	}
}

func (t *Tracker) unlink(c *Conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else if t.head == c {
		t.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else if t.tail == c {
		t.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

func (t *Tracker) touch(c *Conn) {
	if t.head == c {
		return
	}
	t.unlink(c)
	t.pushFront(c)
}
