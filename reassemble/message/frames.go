package message

import (
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message/pmd"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// badControlCap is the largest oversized control frame payload still
// delivered (flagged); larger ones are skipped.
const badControlCap = 64 << 10

// scratchSize is the unmasking buffer of a side.
const scratchSize = 64 << 10

// what the payload of the current frame is used for.
const (
	kindData    = iota // payload of the open data message
	kindControl        // payload of a control frame, buffered
	kindDrop           // payload of a data message that cannot be delivered (counted as missing)
	kindSkip           // payload of a bad frame, ignored
)

// frameState is the WebSocket parsing state of one direction.
type frameState struct {
	fh      [wsframe.MaxHeader]byte // partial header
	fhn     int
	inFrame bool
	h       wsframe.Header
	rem     uint64 // payload bytes left in the current frame
	mpos    uint64 // payload position in the current frame (for the mask)
	kind    int
	fast    bool // the message was ended by the zero-copy path

	msgOpen    bool // a data message is open (its final frame not seen)
	compressed bool
	undecoded  bool   // inflating the open message stopped (lost bytes, corrupt, too large)
	lostSync   bool   // bytes were lost since the last frame boundary we trust
	syncReason string // why (a proto.Reason value): what a message touched by it is flagged with

	ctl        []byte
	ctlFirst   int64
	ctlMissing int64
	ctlBad     bool
	ctlReason  string // why bytes of the control frame are missing (first cause)

	infl     *pmd.Inflater
	prober   *pmd.Prober
	probeBuf []byte
	scratch  []byte
	emitFn   func([]byte)
}

// frames parses WebSocket frames from b. It returns the bytes left when
// it had to switch to hunting.
func (s *side) frames(b []byte, ts int64) []byte {
	for len(b) > 0 {
		if !s.inFrame {
			var h wsframe.Header
			var n int
			var err error
			if s.fhn == 0 {
				h, n, err = wsframe.Parse(b)
				if err == wsframe.ErrShort {
					s.fhn = copy(s.fh[:], b)
					return nil
				}
				b = b[n:]
			} else {
				k := copy(s.fh[s.fhn:], b)
				h, n, err = wsframe.Parse(s.fh[:s.fhn+k])
				if err == wsframe.ErrShort {
					s.fhn += k
					return nil
				}
				b = b[n-s.fhn:]
				s.fhn = 0
			}
			if err != nil {
				// A 64-bit length with the top bit set (RFC 6455 forbids
				// it): where the frame ends is unknown. Its message is
				// flagged and the direction hunts for the next boundary.
				s.stats.BadFrames++
				s.lostHeader(h.Fin, h.Opcode, proto.ReasonBadFrame, ts)
				s.startHunt(true)
				s.syncReason = proto.ReasonBadFrame
				return b
			}
			s.beginFrame(h, ts)
			if s.rem == 0 {
				s.endFrame(ts)
			}
			continue
		}
		n := uint64(len(b))
		if n > s.rem {
			n = s.rem
		}
		s.payload(b[:n], ts)
		b = b[n:]
		s.rem -= n
		s.mpos += n
		if s.rem == 0 {
			s.endFrame(ts)
		}
	}
	return nil
}

// beginFrame classifies a new frame and opens or continues its message.
func (s *side) beginFrame(h wsframe.Header, ts int64) {
	d := s.d
	s.h = h
	s.inFrame = true
	s.rem = h.Length
	s.mpos = 0
	s.fast = false
	op := h.Opcode
	switch {
	case !wsframe.Known(op):
		s.stats.BadFrames++
		s.stats.MessagesLost++
		s.kind = kindSkip
		return
	case wsframe.IsControl(op):
		s.kind = kindControl
		s.ctl = s.ctl[:0]
		s.ctlFirst = ts
		s.ctlMissing = 0
		s.ctlBad = false
		s.ctlReason = ""
		if !h.Fin || h.Rsv != 0 || h.Length > uint64(d.lim.MaxControl) {
			s.stats.BadFrames++
			s.ctlBad = true
			if !h.Fin || h.Length > badControlCap {
				s.kind = kindSkip
				s.stats.MessagesLost++
			}
		}
		return
	}
	rsvOK := h.Rsv == 0 || (h.Rsv == wsframe.RSV1 && op != wsframe.OpContinuation && d.pmdPossible())
	if op == wsframe.OpContinuation {
		if !s.msgOpen {
			// The start of this message was lost (or never sent).
			reason := s.syncReason
			if !s.lostSync {
				s.stats.BadFrames++
				reason = proto.ReasonBadFrame
			}
			s.em.begin(proto.OpBinary, false, ts)
			s.em.incomplete(s.pendingMissing, reason)
			s.pendingMissing = 0
			s.msgOpen = true
			s.compressed = false
			s.undecoded = d.pmdPossible() // it may be deflate data we cannot inflate: never publish it
		}
	} else {
		if s.msgOpen {
			// A new message while one is open: the open one lost its end
			// (to a loss, or the sender violated the protocol).
			reason := s.syncReason
			if !s.lostSync && s.em.c.Complete {
				s.stats.BadFrames++
				reason = proto.ReasonBadFrame
			}
			s.em.incomplete(0, reason)
			s.endMessage(ts)
		}
		s.compressed = h.Rsv&wsframe.RSV1 != 0 && rsvOK
		s.em.begin(opName(op), s.compressed, ts)
		s.msgOpen = true
		s.undecoded = false
		s.pendingMissing = 0
		if s.compressed {
			if s.infl == nil {
				s.infl = d.newInflater(s)
			}
			s.infl.Begin()
		}
	}
	s.lostSync = false
	s.kind = kindData
	if !s.compressed {
		if h.Length > uint64(d.lim.MaxMessage-s.em.sized) {
			// Known from the header: the message will be cut at MaxMessage
			// (a frame claiming 2^63-1 bytes or 2 GiB is flagged as such,
			// whatever ends it first).
			s.em.incomplete(0, proto.ReasonTooLarge)
		}
		s.em.reserve(h.Length)
	} else if h.Length >= bigMessage/4 {
		s.em.reserve(proto.MaxChunk)
	}
	if !rsvOK {
		s.stats.BadFrames++
		s.drop(h.Length)
		return
	}
	if s.undecoded {
		// The rest of a message that cannot be inflated (or whose start was
		// lost): the message is already flagged; its bytes are not delivered.
		s.kind = kindDrop
	}
}

// drop marks the rest of the open message undeliverable, n bytes missing.
func (s *side) drop(n uint64) {
	s.kind = kindDrop
	s.em.incomplete(int64(min(n, 1<<62)), proto.ReasonBadFrame)
	if s.compressed && !s.undecoded {
		s.infl.Abort()
	}
	s.undecoded = true
}

// payload handles bytes of the current frame's payload.
func (s *side) payload(p []byte, ts int64) {
	switch s.kind {
	case kindControl:
		if s.h.Masked {
			n := len(s.ctl)
			s.ctl = append(s.ctl, p...)
			wsframe.MaskCopy(s.ctl[n:], s.ctl[n:], s.h.Key, s.mpos)
		} else {
			s.ctl = append(s.ctl, p...)
		}
		return
	case kindData:
	default:
		return
	}
	if s.undecoded || s.em.cut {
		return
	}
	if !s.h.Masked {
		if !s.compressed && s.h.Fin && uint64(len(p)) == s.rem && len(s.em.buf) == 0 {
			s.em.end(p, ts) // whole final payload here, nothing buffered: no copy
			s.fast = true
			return
		}
		s.deliver(p, ts)
		return
	}
	if s.scratch == nil {
		s.scratch = make([]byte, scratchSize)
	}
	pos := s.mpos
	for len(p) > 0 {
		n := min(len(p), len(s.scratch))
		wsframe.MaskCopy(s.scratch[:n], p[:n], s.h.Key, pos)
		s.deliver(s.scratch[:n], ts)
		p = p[n:]
		pos += uint64(n)
	}
}

// deliver passes unmasked payload to the message (inflating it if needed).
func (s *side) deliver(p []byte, ts int64) {
	s.em.c.LastNs = ts
	if !s.compressed {
		s.em.write(p, ts)
		return
	}
	if s.undecoded {
		return
	}
	if err := s.infl.Write(p, s.emitFn); err != nil {
		s.undecodable()
		return
	}
	if s.em.cut {
		s.infl.Abort()
		s.undecoded = true
	}
}

// undecodable flags the open compressed message as impossible to inflate.
func (s *side) undecodable() {
	if !s.undecoded {
		s.undecoded = true
		s.stats.Undecodable++
		s.em.incomplete(0, proto.ReasonUndecodable)
	}
}

// endFrame finishes the current frame.
func (s *side) endFrame(ts int64) {
	s.inFrame = false
	switch s.kind {
	case kindControl:
		complete := !s.ctlBad && s.ctlMissing == 0
		reason := ""
		switch {
		case s.ctlBad:
			reason = proto.ReasonBadFrame
		case s.ctlMissing > 0:
			reason = s.ctlReason
		}
		code := 0
		if s.h.Opcode == wsframe.OpClose && s.ctlMissing == 0 {
			code = wsframe.CloseCode(s.ctl)
		}
		s.em.single(opName(s.h.Opcode), s.ctl, complete, s.ctlMissing, reason, code, s.ctlFirst, ts)
		if cap(s.ctl) > 4<<10 {
			s.ctl = nil
		}
	case kindData, kindDrop:
		if s.h.Fin {
			s.endMessage(ts)
		}
	}
}

// endMessage emits the end of the open data message.
func (s *side) endMessage(ts int64) {
	if !s.msgOpen {
		return
	}
	s.msgOpen = false
	if s.fast {
		s.fast = false
		return
	}
	if s.compressed && !s.undecoded && !s.em.cut {
		if err := s.infl.End(s.emitFn); err != nil {
			s.undecodable()
		}
	}
	if s.compressed && s.infl != nil {
		s.em.wire = s.infl.In() // the message's size on the wire (Tapline-Wire-Size)
	}
	s.em.end(nil, ts)
}

// lose accounts n bytes of the current frame's payload that will not
// arrive, for reason (lost by the mirror, or cut by the connection's end).
func (s *side) lose(n uint64, reason string) {
	switch s.kind {
	case kindControl:
		s.ctlMissing += int64(n)
		if s.ctlReason == "" {
			s.ctlReason = reason
		}
	case kindData:
		s.em.incomplete(int64(n), reason)
		if s.compressed && !s.undecoded {
			s.infl.Abort() // the window is lost too
		}
		s.undecoded = s.undecoded || s.compressed
	case kindDrop:
		s.em.incomplete(int64(n), reason)
	}
}

// lostHeader accounts a frame header whose frame cannot be parsed — cut
// by a gap or the connection's end (only its first byte, fin and opcode,
// may be known), or with a forbidden length — for reason. Its message is
// emitted flagged, never dropped: a data frame opens (and, when final,
// ends) a flagged message, so that continuations found later are appended
// to it rather than counted twice; a frame that cannot become a message
// (control, unknown opcode) is counted in Stats.MessagesLost.
func (s *side) lostHeader(fin bool, op uint8, reason string, ts int64) {
	s.fhn = 0
	s.inFrame = false
	switch {
	case wsframe.IsControl(op) || !wsframe.Known(op):
		s.stats.MessagesLost++
		return
	case op == wsframe.OpContinuation && s.msgOpen:
		s.em.incomplete(0, reason)
	default:
		if s.msgOpen {
			s.em.incomplete(0, reason) // its end is lost with this header
			s.endMessage(ts)
		}
		if op == wsframe.OpContinuation {
			op = wsframe.OpBinary // the rest of a message whose start was lost
		}
		s.em.begin(opName(op), false, ts)
		s.em.incomplete(s.pendingMissing, reason)
		s.pendingMissing = 0
		s.msgOpen = true
		s.compressed = false
	}
	if s.compressed && !s.undecoded {
		s.infl.Abort()
	}
	// Nothing of this frame's payload can be placed, so nothing later of
	// its message is delivered either.
	s.undecoded = true
	if fin {
		s.endMessage(ts)
	}
}

// wsGap handles n bytes lost while parsing frames.
func (s *side) wsGap(n int64, ts int64) {
	if s.inFrame {
		if uint64(n) < s.rem {
			s.lose(uint64(n), proto.ReasonGap)
			s.rem -= uint64(n)
			s.mpos += uint64(n)
			return
		}
		k := s.rem
		s.lose(k, proto.ReasonGap)
		s.rem = 0
		s.mpos += k
		s.endFrame(ts)
		n -= int64(k)
		if n == 0 {
			// The gap ended exactly at the frame's end: the sequence numbers
			// say the next byte is the next header, no hunting needed.
			return
		}
	}
	s.loseSync(n, ts)
}

// loseSync starts hunting for a frame boundary after n lost bytes (the
// gap covers the next header, or part of it).
func (s *side) loseSync(n int64, ts int64) {
	if s.fhn > 0 {
		s.lostHeader(s.fh[0]&0x80 != 0, s.fh[0]&0x0f, proto.ReasonGap, ts)
	}
	s.fhn = 0
	s.inFrame = false
	if s.msgOpen {
		s.em.incomplete(n, proto.ReasonGap)
		if s.compressed && !s.undecoded {
			s.infl.Abort()
			s.undecoded = true
		}
	} else {
		s.pendingMissing += n
	}
	s.startHunt(true)
}

// wsClose ends the direction (also while hunting): a frame or message cut
// short is incomplete, reason cut unless an earlier cause touched it.
func (s *side) wsClose(ts int64) {
	if s.fhn > 0 {
		s.lostHeader(s.fh[0]&0x80 != 0, s.fh[0]&0x0f, proto.ReasonCut, ts)
	}
	if s.inFrame {
		s.lose(s.rem, proto.ReasonCut)
		s.rem = 0
		if s.kind == kindControl {
			s.endFrame(ts)
		}
	}
	if s.msgOpen {
		if s.compressed && !s.undecoded {
			s.infl.Abort()
			s.undecoded = true
		}
		s.em.incomplete(0, proto.ReasonCut)
		s.endMessage(ts)
	}
}
