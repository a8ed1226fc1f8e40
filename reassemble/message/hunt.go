package message

import (
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message/httpup"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// Resynchronisation limits.
const (
	// resyncCap bounds the bytes held while hunting on a WebSocket
	// connection (older bytes are dropped; candidates keep being tracked
	// by position, so frames larger than this still verify).
	resyncCap = 256 << 10
	// midCap bounds the bytes held while deciding whether a mid-stream
	// connection is a WebSocket; past it the connection is raw TCP.
	midCap = 256 << 10
	// midQuiet: a mid-stream direction with this many bytes and not a
	// single plausible frame chain alive is raw TCP.
	midQuiet = 4 << 10
	// maxCands bounds the candidate boundaries tracked at once.
	maxCands = 4096
)

// cand is a candidate frame boundary: a chain of plausible frame headers
// starting at start, each one where the previous frame ends.
type cand struct {
	start  int64
	hdrs   [3]int64 // positions of the first verified headers
	nh     int      // headers verified
	next   int64    // where the next header must be
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
	for c.nh < 3 {
		if c.next < h.base {
			return false
		}
		off := c.next - h.base
		sz := wsframe.Size(h.buf[off:])
		if sz == 0 || c.next+int64(sz) > end {
			return true
		}
		hd, n, err := wsframe.Parse(h.buf[off:])
		if err != nil || !s.plausible(hd, c) {
			return false
		}
		c.hdrs[c.nh] = c.next
		c.nh++
		if !wsframe.IsControl(hd.Opcode) {
			c.open = !hd.Fin
		}
		c.next += int64(n) + int64(hd.Length)
	}
	return true
}

// verified reports whether chain c proves a frame boundary: three
// headers, or two ending exactly where the data ends (a segment
// boundary), or — at the end of the data — one ending exactly there.
func verified(c *cand, end int64, atEnd bool) bool {
	switch {
	case c.nh >= 3:
		return true
	case c.nh >= 2 && c.next == end:
		return true
	case atEnd && c.nh >= 1 && c.next == end:
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
		c := cand{start: pos, nh: 1, next: pos + int64(n) + int64(hd.Length), masked: hd.Masked,
			open: !wsframe.IsControl(hd.Opcode) && !hd.Fin}
		c.hdrs[0] = pos
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
	if drop := keep - h.base; drop > 0 {
		n := copy(h.buf, h.buf[drop:])
		h.buf = h.buf[:n]
		h.base = keep
	}
}

// resume goes back to frame parsing at the earliest verified header of c
// still held.
func (s *side) resume(c cand, end int64, ts int64) {
	d := s.d
	h := s.hunt
	r := end
	for i := 0; i < min(c.nh, 3); i++ {
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
