package message

import (
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message/httpup"
	"github.com/tapline/tapline/reassemble/message/pmd"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// modes of one direction.
const (
	modeDetect = iota // waiting for the first bytes / the HTTP header block
	modeWS            // parsing WebSocket frames
	modeHunt          // looking for a verifiable frame boundary
	modeTCP           // raw bytes
)

// side is the state of one direction of the connection.
type side struct {
	d       *decoder
	dir     proto.Direction
	mode    int
	stats   Stats
	em      emitter
	firstTs int64
	curTs   int64

	hdr []byte // modeDetect: bytes of the header block so far
	raw []byte // the upgrade request, kept until the connection is settled

	// pendingMissing is lost bytes not yet attributed to a message: they go
	// to the next message that continues a lost one (or the next TCP run).
	pendingMissing int64

	frameState
	hunt hunter
}

func newSide(d *decoder, dir proto.Direction) *side {
	s := &side{d: d, dir: dir}
	s.em.s = s
	s.emitFn = func(p []byte) {
		s.em.wire = s.infl.Consumed() // what p was inflated from: the inflation limit's measure
		s.em.write(p, s.curTs)
		if s.em.cut && s.infl != nil {
			s.infl.Abort() // inflate no further what is dropped anyway
		}
	}
	if d.meta.MidStream {
		s.startHunt(false)
	}
	return s
}

func (s *side) data(b []byte, ts int64) {
	if s.firstTs == 0 {
		s.firstTs = ts
	}
	s.curTs = ts
	// Each step consumes bytes in one mode and hands back what must be
	// read in the mode it switched to (a loop, not recursion, so bounded
	// stack whatever the input).
	for len(b) > 0 {
		switch s.mode {
		case modeDetect:
			b = s.detect(b, ts)
		case modeWS:
			b = s.frames(b, ts)
		case modeHunt:
			b = s.huntData(b, ts)
		default:
			s.tcpData(b, ts)
			b = nil
		}
	}
}

// detect looks at the first bytes of the direction: an HTTP upgrade
// request or 101 response makes it a WebSocket; anything else raw TCP.
// It returns the bytes left to read in the mode it switched to.
func (s *side) detect(b []byte, ts int64) []byte {
	d := s.d
	if d.proto == protoTCP {
		s.mode = modeTCP
		return b
	}
	s.hdr = append(s.hdr, b...)
	switch httpup.Sniff(s.hdr) {
	case httpup.Unknown:
		return nil
	case httpup.Other:
		return s.notHTTP(ts)
	}
	m, err := httpup.Parse(s.hdr)
	if err == httpup.ErrIncomplete {
		if len(s.hdr) > d.lim.MaxHeader {
			return s.notHTTP(ts)
		}
		return nil
	}
	if err != nil {
		return s.notHTTP(ts)
	}
	if m.Status == 0 {
		d.req = m
		if !m.IsUpgradeRequest() {
			d.settleTCP(ts)
			return nil
		}
		d.learnClient(s, true)
		if d.proto == protoUnknown {
			d.proto = protoWS
		}
		s.raw = s.hdr[:m.Len:m.Len]
	} else {
		if !m.IsUpgradeResponse() {
			d.settleTCP(ts)
			return nil
		}
		d.resp = m
		d.pmd = pmd.Parse(m.Get("Sec-WebSocket-Extensions"))
		d.pmdKnown = true
		d.learnClient(s, false)
		d.proto = protoWS
		if o := d.other(s); o.mode != modeDetect || len(o.hdr) == 0 {
			d.open(ts)
		}
	}
	rest := s.hdr[m.Len:]
	s.hdr = nil
	s.mode = modeWS
	return rest
}

// notHTTP handles a direction whose first bytes are not a handshake: raw
// TCP, unless the other direction already showed a WebSocket (then this
// direction's handshake was not mirrored and its frames are looked for).
func (s *side) notHTTP(ts int64) []byte {
	if s.d.proto != protoWS {
		s.d.settleTCP(ts)
		return nil
	}
	held := s.hdr
	s.hdr = nil
	s.startHunt(true)
	return held
}

// flushHandshake settles a connection whose handshake never completed: a
// partial header block of a WebSocket connection is dropped, anything else
// is raw TCP.
func (s *side) flushHandshake(ts int64) {
	if s.mode == modeDetect && len(s.hdr) > 0 {
		if s.d.proto == protoWS {
			s.hdr = nil
			return
		}
		s.d.settleTCP(ts)
	}
}

// toTCP switches the side to raw TCP, emitting what it holds.
func (s *side) toTCP(ts int64) {
	var held []byte
	switch s.mode {
	case modeDetect:
		held = s.hdr
		s.hdr = nil
	case modeWS:
		held = s.raw
	case modeHunt:
		held = s.hunt.buf
		s.hunt = hunter{}
	}
	s.raw = nil
	s.mode = modeTCP
	if len(held) > 0 {
		s.tcpData(held, s.firstTs)
	}
}

// gap handles n lost bytes at the current position.
func (s *side) gap(n int64, ts int64) {
	s.curTs = ts
	switch s.mode {
	case modeDetect:
		if s.d.proto == protoTCP {
			s.mode = modeTCP
			s.tcpGap(n, ts)
			return
		}
		// The handshake of this direction is broken: treat what follows as
		// a mid-stream start.
		s.hdr = nil
		s.pendingMissing += n
		s.startHunt(false)
	case modeTCP:
		s.tcpGap(n, ts)
	case modeHunt:
		s.huntGap(n, ts)
	case modeWS:
		s.wsGap(n, ts)
	}
}

// close ends the direction: open messages are emitted incomplete.
func (s *side) close(ts int64) {
	s.curTs = ts
	if s.mode == modeHunt {
		if rest, ok := s.huntStep(ts, true); ok {
			s.data(rest, ts)
		} else if rest, ok := s.huntSpan(ts); ok {
			s.data(rest, ts)
		}
		if s.mode == modeHunt && s.d.proto != protoWS {
			s.d.settleTCP(ts)
		}
	}
	switch s.mode {
	case modeWS, modeHunt:
		// Hunting without a verified boundary: the message open before
		// the loss still gets its (flagged) last chunk.
		s.wsClose(ts)
	case modeTCP:
		if s.em.open {
			s.em.end(nil, ts)
		}
	}
}

// tcpData adds raw bytes: a run ends when the other direction speaks, at a
// gap, or at Limits.MaxMessage.
func (s *side) tcpData(b []byte, ts int64) {
	if o := s.d.other(s); o.mode == modeTCP && o.em.open {
		o.em.end(nil, ts)
	}
	for len(b) > 0 {
		if !s.em.open {
			s.em.begin(proto.OpTCP, false, ts)
			if s.pendingMissing > 0 {
				s.em.incomplete(s.pendingMissing, proto.ReasonGap)
				s.pendingMissing = 0
			}
		}
		room := s.d.lim.MaxMessage - s.em.sized
		n := int64(len(b))
		if n >= room {
			n = room
		}
		s.em.write(b[:n], ts)
		b = b[n:]
		if s.em.sized >= s.d.lim.MaxMessage {
			s.em.end(nil, ts)
		}
	}
}

// tcpGap ends the open run as incomplete, or marks the next one.
func (s *side) tcpGap(n int64, ts int64) {
	if s.em.open {
		s.em.incomplete(n, proto.ReasonGap)
		s.em.end(nil, ts)
		return
	}
	s.pendingMissing += n
}

// opName is the Tapline-Opcode of a WebSocket opcode.
func opName(op uint8) string {
	switch op {
	case wsframe.OpText:
		return proto.OpText
	case wsframe.OpBinary:
		return proto.OpBinary
	case wsframe.OpClose:
		return proto.OpClose
	case wsframe.OpPing:
		return proto.OpPing
	case wsframe.OpPong:
		return proto.OpPong
	}
	return proto.OpBinary
}
