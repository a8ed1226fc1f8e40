package message

import (
	"bytes"
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
	// midQuiet: a mid-stream direction with this many bytes and hardly a
	// plausible frame header (fewer than one per KiB: text protocols) is
	// raw TCP. It is larger than the frames text-heavy WebSocket peers
	// send, since a cut inside a text frame looks like this up to its end.
	midQuiet = 64 << 10
	// maxCands bounds the candidate boundaries tracked at once.
	maxCands = 4096
	// probeMax is the largest compressed frame tried as evidence.
	probeMax = 16 << 10
)

// cand is a candidate frame boundary: a chain of plausible frame headers
// starting at start, each one where the previous frame ends.
type cand struct {
	start  int64
	hdrs   [4]int64  // positions of the first headers
	evs    [4]int    // their evidence
	lens   [4]uint64 // their payload lengths
	nh     int       // headers in the chain
	last   int64     // position of the last header
	next   int64     // where the next header must be
	score  int       // evidence gathered (see evidence)
	merge  int64     // where another chain joined this one (-1: none): resume there
	open   bool      // the chain is inside a fragmented message
	masked bool
	dead   bool
	done   bool // verified, then broken by a bad header: stop following it
	closed bool // the chain has a close frame: nothing may follow it

	// What resuming at one of its points gives up (see resume): the
	// message starts (a control frame, or a data message's first frame)
	// before it, and whether it is inside a fragmented message whose
	// start the chain has (own).
	starts   int
	data     int
	own      bool
	before   [4]mark // at hdrs[i]
	atLast   mark    // at last
	atMerge  mark    // at merge
	lastHdr  wsframe.Header
	lastSize int // encoded size of lastHdr
}

// mark is what a chain gave up before one of its points.
type mark struct {
	starts int  // message starts
	data   int  // of which data messages
	own    bool // inside a fragmented message whose start the chain has
}

// hunter looks for a verifiable frame boundary in one direction.
type hunter struct {
	buf   []byte // bytes from stream position base on
	base  int64
	scan  int64 // next position to try as a chain start
	cands []*cand
	at    map[int64]*cand // header position -> the chain that has it
	cum   map[int64]int   // header position -> its chain's evidence before it
	marks map[int64]mark  // header position -> its chain's mark before it
	seen  bool            // bytes arrived since the hunt started
	// created counts the chains started (plausible first headers).
	created int
	// borrowed: buf is the caller's Data slice (hunting in place, no copy);
	// what is kept is copied before the call returns.
	borrowed bool
}

// startHunt switches the side to hunting.
func (s *side) startHunt(resync bool) {
	s.mode = modeHunt
	s.hunt = hunter{}
	s.lostSync = true
	s.syncReason = proto.ReasonGap
	s.stats.Resyncs++
	_ = resync
	if s.infl != nil {
		// Bytes of this direction were not placed: whatever they held is
		// missing from the sender's compression history, so the window
		// kept for context takeover is no longer its exact suffix. Later
		// messages then inflate exactly without it or are flagged
		// undecodable, never inflated against a stale window.
		s.infl.Abort()
	}
}

// huntData adds bytes while hunting. It returns the bytes to read in the
// mode it switched to (from the boundary it found on).
func (s *side) huntData(b []byte, ts int64) []byte {
	d := s.d
	if d.proto == protoTCP {
		s.mode = modeTCP
		return b
	}
	if !s.hunt.seen && d.proto == protoUnknown && d.req == nil && d.resp == nil {
		// A "mid-stream" connection may still start with its handshake
		// (only the SYN was missed).
		if k := httpup.Sniff(b); k == httpup.Request || k == httpup.Response {
			s.mode = modeDetect
			s.stats.Resyncs--
			return b
		}
	}
	h := &s.hunt
	h.seen = true
	if len(h.buf) == 0 {
		h.buf, h.borrowed = b, true
	} else {
		h.buf = append(h.buf, b...)
	}
	rest, ok := s.huntStep(ts, false)
	if ok {
		return rest
	}
	if s.mode == modeHunt && s.hunt.borrowed {
		s.hunt.buf = bytes.Clone(s.hunt.buf)
		s.hunt.borrowed = false
	}
	return nil
}

// huntGap: bytes lost while hunting. What was held can no longer be
// chained across the gap: it is decided now or dropped.
func (s *side) huntGap(n int64, ts int64) {
	if rest, ok := s.huntStep(ts, true); ok {
		s.data(rest, ts)
	} else if rest, ok := s.huntSpan(ts); ok {
		s.data(rest, ts) // ends inside the frame the gap falls in: its end is known
	}
	if s.mode != modeHunt {
		s.gap(n, ts)
		return
	}
	if s.msgOpen {
		s.em.incomplete(n, proto.ReasonGap) // the open message lost these bytes too
	} else {
		s.pendingMissing += n
	}
	if s.d.proto == protoUnknown {
		s.pendingMissing += int64(len(s.hunt.buf))
	}
	s.hunt = hunter{seen: s.hunt.seen}
}

// huntSpan accepts, when no more contiguous bytes follow (a gap or the
// connection's end), the earliest chain whose last frame reaches past the
// bytes held, if its evidence would verify it had that frame ended there
// (scoreAligned): decoding resumes inside that frame, so a gap then falls
// at a known position of it and the next header after the gap is found
// without searching.
func (s *side) huntSpan(ts int64) ([]byte, bool) {
	h := &s.hunt
	if s.d.proto != protoWS {
		return nil, false
	}
	end := h.base + int64(len(h.buf))
	var best *cand
	for _, c := range h.cands {
		if !c.dead && c.next > end && c.score >= scoreAligned+c.extra() && (best == nil || c.start < best.start) {
			best = c
		}
	}
	if best == nil {
		return nil, false
	}
	return s.resume(best, end, ts), true
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

// advance follows chain c through the bytes held; false when it broke
// or lost a merge with another chain.
//
// Chains meet: every offset is tried, so a real header starts a chain of
// its own, and a chain that started on garbage may land on a real header
// and follow the real frames from there. Frames before such a meeting
// point are disputed, so the surviving chain (the earlier start) resumes
// at the meeting point. A chain that lands on the start of another keeps
// its own start only if its frames before that point carry strong
// evidence of their own.
func (s *side) advance(c *cand, end int64) bool {
	h := &s.hunt
	for !c.dead && !c.done {
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
		ev := -1
		if err == nil && !c.closed && s.plausible(hd, c) {
			ev = s.evidence(hd, h.buf[off+int64(n):])
		}
		if ev < 0 {
			if c.score >= c.need() {
				c.done = true // the frames so far verified; frame parsing will meet the bad header
				return true
			}
			c.dead = true
			return false
		}
		pos := c.next
		if o := h.at[pos]; o != nil && o != c && !o.dead {
			// Two chains meet at pos. Their frames before pos disagree: the
			// one with clearly more evidence for them wins and keeps its
			// start; otherwise the earlier one survives and resumes at pos.
			mine, theirs := c.score, h.cum[pos]
			switch {
			case mine >= theirs+scoreMargin:
				o.dead = true
			case theirs >= mine+scoreMargin:
				c.dead = true
				return false
			case o.start == pos || o.start > c.start:
				o.dead = true
				if c.merge < 0 {
					c.merge = pos
					c.atMerge = mark{c.starts, c.data, c.own}
				}
			default:
				c.dead = true
				if o.merge < 0 || pos < o.merge {
					o.merge = pos
					o.atMerge = s.hunt.marks[pos]
				}
				return false
			}
		}
		s.extend(c, pos, hd, n, ev)
		if c.score >= c.need()+2 && c.merge < 0 {
			return true
		}
	}
	return false
}

// extend adds the header hd found at pos to chain c.
func (s *side) extend(c *cand, pos int64, hd wsframe.Header, n int, ev int) {
	if s.hunt.at == nil {
		s.hunt.at = map[int64]*cand{}
		s.hunt.cum = map[int64]int{}
		s.hunt.marks = map[int64]mark{}
	}
	m := mark{c.starts, c.data, c.own}
	s.hunt.at[pos] = c
	s.hunt.cum[pos] = c.score
	s.hunt.marks[pos] = m
	if c.nh < len(c.hdrs) {
		c.hdrs[c.nh] = pos
		c.evs[c.nh] = ev
		c.lens[c.nh] = hd.Length
		c.before[c.nh] = m
	}
	c.nh++
	c.last = pos
	c.atLast = m
	c.lastHdr, c.lastSize = hd, n
	c.score += ev
	if hd.Opcode != wsframe.OpContinuation { // a control frame or a message's first frame
		c.starts++
		if !wsframe.IsControl(hd.Opcode) {
			c.data++
		}
	}
	if !wsframe.IsControl(hd.Opcode) {
		c.open = !hd.Fin
		c.own = !hd.Fin && (hd.Opcode != wsframe.OpContinuation || c.own)
	}
	if hd.Opcode == wsframe.OpClose {
		c.closed = true // a peer sends nothing after its close frame
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
	// maskedExtra is added to each threshold for masked (client) chains:
	// masked structured data (text XOR a repeating key) forms chains of
	// plausible headers far more readily than random bytes.
	maskedExtra = 3
	// weakSkip: frames with weak evidence given up at the start of a
	// resynchronised chain (see resume).
	weakSkip = 3
	// denseGrid: frames closer than this on average make landing on the
	// real grid by chance likely (see resume).
	denseGrid = 2048
	// scoreMargin: where two chains meet, the one with this much more
	// evidence for its frames before the meeting point keeps them.
	scoreMargin = 2
)

// evidence scores one plausible header by what its payload (the bytes
// held after it, possibly fewer than its length) shows: -1 disproves it,
// 0 for a short continuation (weak: zero-filled data looks like short
// empty-ish ones),
// 0 for a ping or pong, 1 for a binary or compressed frame, 2 for a text frame whose
// payload is valid UTF-8 without control characters (3 from 32 bytes) or
// a close frame with a valid code, 3 for a whole compressed message that inflates without history.
func (s *side) evidence(h wsframe.Header, after []byte) int {
	if !h.Fin && h.Length == 0 {
		return -1
	}
	if h.Rsv != 0 {
		// A compressed first frame: try to inflate it (or the prefix held)
		// without history. Real data with context takeover may fail (it
		// refers to earlier messages): that is only weak evidence.
		whole := h.Fin && h.Length <= probeMax && uint64(len(after)) >= h.Length
		k := int(min(uint64(len(after)), h.Length, probeMax))
		if !whole && k < 64 {
			return 1
		}
		if s.prober == nil {
			s.prober = &pmd.Prober{}
		}
		s.probeBuf = append(s.probeBuf[:0], after[:k]...)
		if h.Masked {
			wsframe.MaskCopy(s.probeBuf, s.probeBuf, h.Key, 0)
		}
		switch {
		case whole && s.prober.Inflates(s.probeBuf, 4*probeMax):
			return 3
		case !whole && s.prober.InflatesPrefix(s.probeBuf):
			return 2
		}
		return 1
	}
	var p [64]byte
	k := int(min(uint64(len(after)), h.Length, uint64(len(p))))
	copy(p[:], after[:k])
	if h.Masked {
		wsframe.MaskCopy(p[:k], p[:k], h.Key, 0)
	}
	if h.Masked && h.Rsv == 0 && (h.Opcode == wsframe.OpBinary || h.Opcode == wsframe.OpContinuation) && k >= 16 && xorText(p[:k]) {
		return 0
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
		// Control characters are legal but rare in text; XOR-ed ASCII (a
		// false header inside masked text, unmasked with a wrong key) is
		// still valid UTF-8 but full of them.
		for _, c := range p[:k] {
			if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f {
				return 1
			}
		}
		if h.Masked {
			// A false header inside masked text carries 4 bytes of that
			// text as its key: "unmasking" the following bytes XORs text
			// with text (the real key cancels out), which often still
			// reads as text — but hardly as lower-case text (two
			// lower-case letters XOR to a control character, a letter and
			// a digit or punctuation to upper case). Masked text counts as
			// strong only when a quarter of it is lower-case letters.
			if k < 8 || xorText(p[:k]) {
				return 1
			}
		}
		switch {
		case k >= 32:
			return 3
		case k >= 8:
			return 2
		}
		return 1
	case wsframe.OpPing, wsframe.OpPong:
		// Short and without any checkable content: they follow each other
		// too easily in structured data (masked text) to count.
		return 0
	case wsframe.OpClose:
		if h.Length == 1 {
			return -1
		}
		if h.Length == 0 {
			return 1
		}
		if k >= 2 {
			if !wsframe.ValidCloseCode(wsframe.CloseCode(p[:k])) || !validUTF8Prefix(p[2:k], uint64(k) == h.Length) {
				return -1
			}
			return 2
		}
		return 1
	}
	return 1
}

// xorText reports whether b looks like text XOR-ed with text: what a
// false header inside masked text "unmasks" to (its key is 4 bytes of the
// masked text, so the real key cancels out). Such bytes are all below
// 0x80 but, unlike real text, hardly ever lower-case letters.
func xorText(b []byte) bool {
	lower := 0
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
		if c >= 'a' && c <= 'z' {
			lower++
		}
	}
	return lower*4 < len(b)
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

// extra is the additional evidence a masked chain needs.
func (c *cand) extra() int {
	if c.masked {
		return maskedExtra
	}
	return 0
}

// need is the evidence that verifies c on its own.
func (c *cand) need() int { return scoreAccept + c.extra() }

// verified reports whether chain c proves a frame boundary.
func verified(c *cand, end int64, atEnd bool) bool {
	switch {
	case c.score >= c.need():
		return true
	case c.done:
		return true
	case c.score >= scoreAligned+c.extra() && c.next == end:
		return true
	case atEnd && c.score >= scoreAtEnd+c.extra() && c.next == end:
		return true
	}
	return false
}

// huntStep advances the hunt over the bytes held; atEnd means no more
// contiguous bytes follow (close or gap). When it found a boundary it
// returns the bytes from there on, to be read as frames, and true.
func (s *side) huntStep(ts int64, atEnd bool) ([]byte, bool) {
	d := s.d
	h := &s.hunt
	end := h.base + int64(len(h.buf))
	// The earliest verified chain wins; chains are created in start order,
	// so scanning stops once one verified — after its last header, so that
	// chains starting inside its frames can still dispute them.
	var best *cand
	for _, c := range h.cands {
		s.advance(c, end)
		if !c.dead && verified(c, end, atEnd) && (best == nil || c.start < best.start) {
			best = c
		}
	}
	for h.scan+2 <= end && (best == nil || h.scan <= best.last) {
		off := h.scan - h.base
		sz := wsframe.Size(h.buf[off:])
		if h.scan+int64(sz) > end {
			break
		}
		pos := h.scan
		h.scan++
		if o := h.at[pos]; o != nil && !o.dead {
			continue // a header of a chain already followed
		}
		hd, n, err := wsframe.Parse(h.buf[off:])
		if err != nil || !s.plausible(hd, nil) {
			continue
		}
		if len(h.cands) >= maxCands {
			h.compact()
			if len(h.cands) >= maxCands {
				continue
			}
		}
		ev := s.evidence(hd, h.buf[off+int64(n):])
		if ev < 0 {
			continue
		}
		h.created++
		c := &cand{start: pos, masked: hd.Masked, merge: -1}
		s.extend(c, pos, hd, n, ev)
		h.cands = append(h.cands, c)
		s.advance(c, end)
		if best == nil && !c.dead && verified(c, end, atEnd) {
			best = c
		}
	}
	h.compact()
	if best != nil && !best.dead {
		return s.resume(best, end, ts), true
	}
	if d.proto == protoUnknown {
		if int64(len(h.buf)) > midCap || (len(h.buf) >= midQuiet && h.created <= len(h.buf)/1024) {
			d.settleTCP(ts)
		}
		return nil, false
	}
	keep := h.scan
	for _, c := range h.cands {
		keep = min(keep, c.start)
	}
	keep = max(keep, end-resyncCap, h.base)
	if drop := keep - h.base; drop > 0 && (h.borrowed || drop >= int64(len(h.buf))/2 || int64(len(h.buf)) > resyncCap+resyncCap/4) {
		if h.borrowed {
			h.buf = h.buf[drop:]
		} else {
			n := copy(h.buf, h.buf[drop:])
			h.buf = h.buf[:n]
		}
		h.base = keep
		for pos, c := range h.at {
			if pos < keep || c.dead {
				delete(h.at, pos)
				delete(h.cum, pos)
				delete(h.marks, pos)
			}
		}
	}
	return nil, false
}

// compact drops dead candidates.
func (h *hunter) compact() {
	live := h.cands[:0]
	for _, c := range h.cands {
		if !c.dead {
			live = append(live, c)
		}
	}
	clear(h.cands[len(live):])
	h.cands = live
}

// resume goes back to frame parsing where chain c says a frame starts:
// where another chain joined it if one did, else its start, or the first
// of its headers still held. It returns the bytes from there on. The
// message starts of c before that point are given up: counted in
// Stats.MessagesLost (or, for the message open there, emitted flagged
// from its next fragment on).
func (s *side) resume(c *cand, end int64, ts int64) []byte {
	d := s.d
	h := s.hunt
	if debugHunt != nil {
		debugHunt(s, *c, end)
	}
	// Where the chain's real part begins is uncertain: a false header in
	// the garbage before the first real one may land exactly on it (or on
	// a later real header) and vouch for nothing. A short false frame
	// (7-bit length) lands on the next real header about once in 126
	// tries, a longer one about once per real frame spacing. So a first
	// frame with weak evidence (binary, continuation, ping, compressed
	// needing history) is given up when it is short or when the real
	// frames are dense (under 2 KiB apart), up to weakSkip of them, until a
	// frame with strong evidence (text, close code, inflatable) or a long
	// weak frame on a sparse grid.
	dense := false
	if c.nh >= 2 {
		dense = (c.next-c.hdrs[1])/int64(c.nh-1) < denseGrid
	}
	r, m := c.last, c.atLast
	for i := 0; i < min(c.nh, len(c.hdrs)); i++ {
		// A header at the hunt's very first byte (right after a gap, or
		// the first byte of a mid-stream capture: where segments, and so
		// often frames, start) is trusted as it is: nothing before it
		// could have landed on it by chance.
		weak := c.evs[i] < 2 && (c.lens[i] < 126 || dense) && !(i == 0 && c.start == 0)
		if !weak || i >= weakSkip {
			r, m = c.hdrs[i], c.before[i]
			break
		}
		if i == c.nh-1 && c.nh <= len(c.hdrs) && c.next == end {
			r, m = end, mark{c.starts, c.data, c.own} // only weak frames: resume after them
		}
	}
	if c.merge >= h.base && c.merge > r {
		r, m = c.merge, c.atMerge
	}
	inside := false
	if r < h.base {
		// The header chosen is no longer held (frames longer than the
		// bytes kept while hunting): resume where the chain ends if that
		// is held, else inside its last frame.
		if c.next >= h.base && c.next <= end {
			r, m = c.next, mark{c.starts, c.data, c.own}
		} else {
			r, m, inside = end, c.atLast, true
		}
	}
	r = min(r, end)
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
	lost := int64(m.starts)
	if m.data > 0 && s.msgOpen {
		// The message open before the loss ended among the frames given up.
		if s.compressed && !s.undecoded {
			s.infl.Abort()
		}
		s.undecoded = true
		s.em.incomplete(0, s.syncReason)
		s.endMessage(ts)
	}
	if m.own {
		lost-- // it continues at r: emitted, flagged, from there on
	}
	s.stats.MessagesLost += lost
	if inside {
		s.resumeInside(c, end, ts)
	}
	return h.buf[r-h.base:]
}

// resumeInside continues parsing at end, inside the last frame of chain c
// whose header and first payload bytes were not held any more: its
// message is emitted flagged, without the bytes dropped.
func (s *side) resumeInside(c *cand, end int64, ts int64) {
	hd := c.lastHdr
	payload := c.last + int64(c.lastSize)
	s.beginFrame(hd, ts)
	dropped := uint64(end - payload)
	s.lose(dropped, s.syncReason)
	if s.kind == kindData && s.compressed {
		s.kind = kindDrop // a deflate stream cannot be entered in its middle
	}
	s.rem = hd.Length - dropped
	s.mpos = dropped
	if s.rem == 0 {
		s.endFrame(ts)
	}
}

// debugHunt, when set by a test, is told about every accepted boundary.
var debugHunt func(s *side, c cand, end int64)
