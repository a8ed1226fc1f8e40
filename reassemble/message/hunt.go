package message

import (
	"unicode/utf8"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message/httpup"
	"github.com/tapline/tapline/reassemble/message/pmd"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// Resynchronisation limits.
const (
	// resyncCap bounds the bytes held while hunting on a WebSocket
	// connection (older bytes are dropped; candidates keep being tracked
	// by position, so frames larger than this still verify).
	resyncCap = 1 << 20
	// midCap bounds the bytes held while deciding whether a mid-stream
	// connection is a WebSocket; past it the connection is raw TCP.
	midCap = 1 << 20
	// midQuiet: a mid-stream direction with this many bytes and not a
	// single plausible frame chain alive is raw TCP.
	midQuiet = 4 << 10
	// maxCands bounds the candidate boundaries tracked at once.
	maxCands = 4096
	// probeMax is the largest compressed frame tried as evidence.
	probeMax = 16 << 10
)

// cand is a candidate frame boundary: a chain of plausible frame headers
// starting at start, each one where the previous frame ends.
type cand struct {
	start  int64
	hdrs   [3]int64 // positions of the first verified headers
	nh     int      // headers verified
	last   int64    // position of the last verified header
	next   int64    // where the next header must be
	score  int      // evidence gathered (see evidence)
	open   bool     // the chain is inside a fragmented message
	masked bool
}

// hunter looks for a verifiable frame boundary in one direction.
type hunter struct {
	buf   []byte // bytes from stream position base on
	base  int64
	scan  int64 // next position to try as a chain start
	cands []cand
	seen  bool // bytes arrived since the hunt started
}

// startHunt switches the side to hunting.
func (s *side) startHunt(resync bool) {
	s.mode = modeHunt
	s.hunt = hunter{}
	s.lostSync = true
	s.stats.Resyncs++
	_ = resync
}

// huntData adds bytes while hunting.
func (s *side) huntData(b []byte, ts int64) {
	d := s.d
	s.mode = modeHunt
	if d.proto == protoTCP {
		s.mode = modeTCP
		s.tcpData(b, ts)
		return
	}
	if !s.hunt.seen && d.proto == protoUnknown && d.req == nil && d.resp == nil {
		// A "mid-stream" connection may still start with its handshake
		// (only the SYN was missed).
		if k := httpup.Sniff(b); k == httpup.Request || k == httpup.Response {
			s.mode = modeDetect
			s.stats.Resyncs--
			s.detect(b, ts)
			return
		}
	}
	s.hunt.seen = true
	s.hunt.buf = append(s.hunt.buf, b...)
	s.huntStep(ts, false)
}

// huntGap: bytes lost while hunting. What was held can no longer be
// chained across the gap: it is decided now or dropped.
func (s *side) huntGap(n int64, ts int64) {
	s.huntStep(ts, true)
	if s.mode == modeWS {
		s.wsGap(n, ts)
		return
	}
	if s.mode != modeHunt {
		s.gap(n, ts)
		return
	}
	s.pendingMissing += n
	if s.d.proto == protoUnknown {
		s.pendingMissing += int64(len(s.hunt.buf))
	}
	s.hunt = hunter{seen: s.hunt.seen}
}

// plausible reports whether h can be a real frame header of this
// direction, following chain c (nil for a chain's first header).
func (s *side) plausible(h wsframe.Header, c *cand) bool {
	d := s.d
	op := h.Opcode
	if !wsframe.Known(op) || h.Rsv&3 != 0 || h.NonMinimal {
		return false
	}
	if h.Rsv != 0 && (!d.pmdPossible() || (op != wsframe.OpText && op != wsframe.OpBinary) || (c != nil && c.open)) {
		return false
	}
	if wsframe.IsControl(op) {
		if !h.Fin || h.Length > 125 {
			return false
		}
	} else if h.Length > uint64(d.lim.MaxMessage) {
		return false
	}
	if d.dirKnown {
		if h.Masked != (s.dir == proto.ClientToServer) {
			return false
		}
	} else if c != nil && h.Masked != c.masked {
		return false
	}
	if c != nil && !wsframe.IsControl(op) {
		if c.open != (op == wsframe.OpContinuation) {
			return false
		}
	}
	return true
}

// advance follows chain c through the bytes held; false when it broke.
func (s *side) advance(c *cand, end int64) bool {
	h := &s.hunt
	for c.score < scoreAccept {
		if c.next < h.base {
			return false
		}
		if c.next+2 > end {
			return true
		}
		off := c.next - h.base
		sz := wsframe.Size(h.buf[off:])
		if c.next+int64(sz) > end {
			return true
		}
		hd, n, err := wsframe.Parse(h.buf[off:])
		if err != nil || !s.plausible(hd, c) {
			return false
		}
		ev := s.evidence(hd, h.buf[off+int64(n):])
		if ev < 0 {
			return false
		}
		s.extend(c, c.next, hd, n, ev)
	}
	return true
}

// extend adds the header hd found at pos to chain c.
func (s *side) extend(c *cand, pos int64, hd wsframe.Header, n int, ev int) {
	if c.nh < len(c.hdrs) {
		c.hdrs[c.nh] = pos
	}
	c.nh++
	c.last = pos
	c.score += ev
	if !wsframe.IsControl(hd.Opcode) {
		c.open = !hd.Fin
	}
	c.next = pos + int64(n) + int64(hd.Length)
}

// Evidence needed to accept a boundary: scoreAccept in any case,
// scoreAligned when the chain ends exactly where the data held ends (a
// segment boundary), scoreAtEnd when no more contiguous data will come.
const (
	scoreAccept  = 5
	scoreAligned = 4
	scoreAtEnd   = 2
)

// evidence scores one plausible header by what its payload (the bytes
// held after it, possibly fewer than its length) shows: -1 disproves it,
// 0 for a short continuation (weak: zero-filled data looks like short
// empty-ish ones),
// 1 for a binary, compressed or ping/pong frame, 2 for a text frame whose
// payload is valid UTF-8 or a close frame with a valid code, 3 for a whole
// compressed message that inflates without history.
func (s *side) evidence(h wsframe.Header, after []byte) int {
	if !h.Fin && h.Length == 0 {
		return -1
	}
	if h.Rsv != 0 && h.Fin && h.Length <= probeMax && uint64(len(after)) >= h.Length {
		p := make([]byte, h.Length)
		copy(p, after)
		if h.Masked {
			wsframe.MaskCopy(p, p, h.Key, 0)
		}
		if s.prober == nil {
			s.prober = &pmd.Prober{}
		}
		if s.prober.Inflates(p, 4*probeMax) {
			return 3
		}
		return 1
	}
	var p [64]byte
	k := int(min(uint64(len(after)), h.Length, uint64(len(p))))
	copy(p[:], after[:k])
	if h.Masked {
		wsframe.MaskCopy(p[:k], p[:k], h.Key, 0)
	}
	switch h.Opcode {
	case wsframe.OpContinuation:
		if h.Length >= 32 {
			return 1
		}
		return 0
	case wsframe.OpText:
		if h.Rsv != 0 {
			return 1
		}
		if !validUTF8Prefix(p[:k], uint64(k) == h.Length) {
			return -1
		}
		if k >= 8 {
			return 2
		}
		return 1
	case wsframe.OpClose:
		if h.Length == 1 {
			return -1
		}
		if h.Length == 0 {
			return 1
		}
		if k >= 2 {
			if !wsframe.ValidCloseCode(wsframe.CloseCode(p[:k])) {
				return -1
			}
			return 2
		}
		return 1
	}
	return 1
}

// validUTF8Prefix reports whether b is valid UTF-8, allowing a rune cut at
// the end unless whole says b is the complete payload.
func validUTF8Prefix(b []byte, whole bool) bool {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			if !whole && len(b) < utf8.UTFMax && utf8.RuneStart(b[0]) && !utf8.FullRune(b) {
				return true
			}
			return false
		}
		b = b[n:]
	}
	return true
}

// verified reports whether chain c proves a frame boundary.
func verified(c *cand, end int64, atEnd bool) bool {
	switch {
	case c.score >= scoreAccept:
		return true
	case c.score >= scoreAligned && c.next == end:
		return true
	case atEnd && c.score >= scoreAtEnd && c.next == end:
		return true
	}
	return false
}

// huntStep advances the hunt over the bytes held; atEnd means no more
// contiguous bytes follow (close or gap).
func (s *side) huntStep(ts int64, atEnd bool) {
	d := s.d
	h := &s.hunt
	end := h.base + int64(len(h.buf))
	live := h.cands[:0]
	for i := range h.cands {
		c := h.cands[i]
		if s.advance(&c, end) {
			live = append(live, c)
		}
	}
	h.cands = live
	for h.scan+2 <= end {
		off := h.scan - h.base
		sz := wsframe.Size(h.buf[off:])
		if h.scan+int64(sz) > end {
			break
		}
		pos := h.scan
		h.scan++
		hd, n, err := wsframe.Parse(h.buf[off:])
		if err != nil || !s.plausible(hd, nil) || len(h.cands) >= maxCands {
			continue
		}
		ev := s.evidence(hd, h.buf[off+int64(n):])
		if ev < 0 {
			continue
		}
		c := cand{start: pos, masked: hd.Masked}
		s.extend(&c, pos, hd, n, ev)
		if s.advance(&c, end) {
			h.cands = append(h.cands, c)
		}
	}
	best := -1
	for i := range h.cands {
		if verified(&h.cands[i], end, atEnd) && (best < 0 || h.cands[i].start < h.cands[best].start) {
			best = i
		}
	}
	if best >= 0 {
		s.resume(h.cands[best], end, ts)
		return
	}
	if d.proto == protoUnknown {
		if int64(len(h.buf)) > midCap || (len(h.buf) >= midQuiet && len(h.cands) == 0) {
			d.settleTCP(ts)
		}
		return
	}
	keep := h.scan
	for i := range h.cands {
		keep = min(keep, h.cands[i].start)
	}
	keep = max(keep, end-resyncCap, h.base)
	if drop := keep - h.base; drop > 0 && (drop >= int64(len(h.buf))/2 || int64(len(h.buf)) > resyncCap+resyncCap/4) {
		n := copy(h.buf, h.buf[drop:])
		h.buf = h.buf[:n]
		h.base = keep
	}
}

// resume goes back to frame parsing at the earliest verified header of c
// still held.
func (s *side) resume(c cand, end int64, ts int64) {
	if debugHunt != nil {
		debugHunt(s, c, end)
	}
	d := s.d
	h := s.hunt
	r := end // c.next == end: the chain ends where the data does
	if c.last >= h.base {
		r = c.last
	}
	for i := 0; i < min(c.nh, len(c.hdrs)); i++ {
		if c.hdrs[i] >= h.base {
			r = c.hdrs[i]
			break
		}
	}
	if d.proto == protoUnknown {
		d.proto = protoWS
	}
	if !d.dirKnown {
		d.learnClient(s, c.masked)
	}
	s.hunt = hunter{seen: true}
	s.mode = modeWS
	s.fhn = 0
	s.inFrame = false
	d.open(ts)
	s.frames(h.buf[r-h.base:], ts)
}

// debugHunt, when set by a test, is told about every accepted boundary.
var debugHunt func(s *side, c cand, end int64)
