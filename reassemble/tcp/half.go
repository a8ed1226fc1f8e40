package tcp

import (
	"sort"
)

// Gap reasons, the Reason of the gap events.
const (
	ReasonReorder   = "mirror loss (reorder window exceeded)"
	ReasonBufferCap = "mirror loss (buffer cap reached)"
	ReasonTruncated = "truncated by the mirror"
	ReasonClose     = "mirror loss (hole at connection end)"
	// ReasonResumed: bytes missing between where a closed connection's
	// stream stopped and the first packet of the connection resuming it.
	ReasonResumed = "mirror loss (before a resumed connection's first packet)"
)

// pending is an out-of-order segment held until the bytes before it arrive.
type pending struct {
	seq  uint32
	data []byte // owned copy
	lost int    // truncated tail after data
}

// half is one direction of a connection: the bytes its sender sent.
type half struct {
	seen    bool   // a packet of this direction was seen
	started bool   // next is valid
	syn     bool   // the SYN of this direction was seen
	next    uint32 // sequence number of the next in-order byte
	start   uint32 // sequence number of stream offset 0
	isn     uint32 // the SYN's sequence number, when syn
	offset  int64  // stream offset of next (bytes delivered + bytes lost)

	bufs     []pending // out of order, sorted by seq, all after next
	bufBytes int

	finSet bool
	finSeq uint32
	done   bool // FIN reached in order

	truncEnd uint32 // bytes before this after next are known lost (truncation)
	truncSet bool

	// Causal hold: in-order output of this direction waiting for the
	// other direction to deliver the bytes this one acknowledged.
	wait      []heldOut
	waitAck   uint32 // release when the other direction delivered up to here
	waitBytes int64  // stream bytes (data and gaps) in wait
	waitSince int64  // capture time of the oldest waiting output
	peerNext  uint32 // the other direction's first sequence number, known from a SYN-ACK
	peerKnown bool

	// Sequence jump detection (see Conn.jump).
	wscale    int8   // window scale option of this direction's SYN (-1: none); valid when syn
	refSet    bool   // refSeq, refEnd, refTs are set
	refSeq    uint32 // start of the segment that reached furthest so far
	refEnd    uint32 // its end
	refTs     int64  // its capture time
	originTs  int64  // capture time of this direction's first packet (or its predecessor's)
	used      int64  // stream bytes of predecessor connections since originTs
	resumed   bool   // next continues a closed connection's stream; cleared at the first data
	resumeOK  bool   // the stream continues a predecessor's from where it stopped
	afterJump bool   // the stream (or a predecessor's) began with a sequence jump

	loss Loss
}

// heldOut is one output held by the causal hold: bytes or a gap.
type heldOut struct {
	data   []byte
	off, n int64 // gap
	reason string
	ts     int64
}

// Loss is the account of one direction of a connection.
type Loss struct {
	BytesSeen    int64 // unique payload bytes delivered in order
	BytesImplied int64 // stream length implied by sequence numbers (seen + lost)
	Gaps         int64 // holes declared
	GapBytes     int64 // bytes in those holes
	Retrans      int64 // payload bytes received again (retransmissions, duplicates, overlaps)
	Truncated    int64 // packets the mirror truncated
	OutOfOrder   int64 // segments that arrived ahead of a hole
}

// seqDiff is a-b in sequence space (wraps).
func seqDiff(a, b uint32) int64 { return int64(int32(a - b)) }

// sink receives what a half produces, in stream order.
type sink interface {
	data(b []byte)
	gap(offset, n int64, reason string)
}

// add processes one segment's payload (and FIN) for this half.
func (h *half) add(t *Tracker, s *segment, out sink) {
	seq := s.seq
	if s.flags&flagSYN != 0 {
		seq++ // the SYN takes one sequence number
	}
	if s.flags&flagSYN != 0 && !h.syn {
		h.syn, h.isn, h.wscale = true, s.seq, s.wscale
	}
	if !h.started {
		h.started = true
		h.next, h.start = seq, seq
	}
	n := len(s.data) + s.lost
	if s.lost > 0 {
		h.loss.Truncated++
	}
	if s.flags&flagFIN != 0 && !h.finSet {
		h.finSet = true
		h.finSeq = seq + uint32(n)
	}
	if n == 0 {
		h.checkDone()
		return
	}
	d := seqDiff(seq, h.next)
	switch {
	case d+int64(n) <= 0: // entirely before next: a retransmission
		h.loss.Retrans += int64(len(s.data))
	case d <= 0: // starts at or before next: trim and deliver
		skip := int(-d)
		data, lost := s.data, s.lost
		if skip > 0 {
			h.loss.Retrans += int64(min(skip, len(data)))
		}
		if skip <= len(data) {
			data = data[skip:]
		} else {
			lost -= skip - len(data)
			data = nil
		}
		h.deliver(data, lost, out)
		h.drain(t, out)
	default: // ahead of a hole: hold it
		h.loss.OutOfOrder++
		h.insert(t, seq, s.data, s.lost)
		h.drain(t, out) // a truncated hole may be known lost already
		h.enforce(t, out)
	}
	h.checkDone()
}

// deliver passes in-order bytes on and records a truncated tail as known
// lost.
func (h *half) deliver(data []byte, lost int, out sink) {
	if len(data) > 0 {
		out.data(data)
		h.next += uint32(len(data))
		h.offset += int64(len(data))
		h.loss.BytesSeen += int64(len(data))
	}
	if lost > 0 {
		end := h.next + uint32(lost)
		if !h.truncSet || seqDiff(end, h.truncEnd) > 0 {
			h.truncEnd, h.truncSet = end, true
		}
	}
}

// insert holds an out-of-order segment (copying its bytes).
func (h *half) insert(t *Tracker, seq uint32, data []byte, lost int) {
	i := sort.Search(len(h.bufs), func(i int) bool { return seqDiff(h.bufs[i].seq, seq) >= 0 })
	if i < len(h.bufs) && h.bufs[i].seq == seq && len(h.bufs[i].data)+h.bufs[i].lost >= len(data)+lost && len(h.bufs[i].data) >= len(data) {
		h.loss.Retrans += int64(len(data))
		return
	}
	p := pending{seq: seq, data: append([]byte(nil), data...), lost: lost}
	h.bufs = append(h.bufs, pending{})
	copy(h.bufs[i+1:], h.bufs[i:])
	h.bufs[i] = p
	h.bufBytes += len(p.data)
	t.buffered += int64(len(p.data))
}

// drain delivers held segments that have become in order, and declares
// holes known lost through truncation.
func (h *half) drain(t *Tracker, out sink) {
	for {
		if len(h.bufs) > 0 && seqDiff(h.bufs[0].seq, h.next) <= 0 {
			p := h.bufs[0]
			h.pop(t)
			d := seqDiff(p.seq, h.next)
			skip := int(-d)
			if skip >= len(p.data)+p.lost {
				h.loss.Retrans += int64(len(p.data))
				continue
			}
			data, lost := p.data, p.lost
			if skip > 0 {
				h.loss.Retrans += int64(min(skip, len(data)))
			}
			if skip <= len(data) {
				data = data[skip:]
			} else {
				lost -= skip - len(data)
				data = nil
			}
			h.deliver(data, lost, out)
			continue
		}
		if h.truncSet && seqDiff(h.truncEnd, h.next) > 0 {
			end := h.truncEnd
			if len(h.bufs) > 0 && seqDiff(h.bufs[0].seq, end) < 0 {
				end = h.bufs[0].seq
			}
			h.skip(int64(seqDiff(end, h.next)), ReasonTruncated, out)
			continue
		}
		return
	}
}

func (h *half) pop(t *Tracker) {
	h.bufBytes -= len(h.bufs[0].data)
	t.buffered -= int64(len(h.bufs[0].data))
	h.bufs[0] = pending{}
	h.bufs = h.bufs[1:]
	if len(h.bufs) == 0 {
		h.bufs = nil
	}
}

// skip declares n bytes at next lost and moves past them.
func (h *half) skip(n int64, reason string, out sink) {
	if n <= 0 {
		return
	}
	out.gap(h.offset, n, reason)
	h.next += uint32(n)
	h.offset += n
	h.loss.Gaps++
	h.loss.GapBytes += n
}

// enforce keeps the held data within the reorder window and the tracker's
// buffer cap: past either, the first hole is declared lost.
func (h *half) enforce(t *Tracker, out sink) {
	for len(h.bufs) > 0 {
		last := h.bufs[len(h.bufs)-1]
		span := seqDiff(last.seq+uint32(len(last.data)), h.next)
		var reason string
		switch {
		case span > int64(t.cfg.ReorderWindow):
			reason = ReasonReorder
		case t.buffered > t.cfg.MaxBuffered:
			reason = ReasonBufferCap
			t.BufferCapHits++
		default:
			return
		}
		h.skip(seqDiff(h.bufs[0].seq, h.next), reason, out)
		h.drain(t, out)
	}
}

// flush declares every remaining hole lost and delivers what is held; used
// when the connection ends.
func (h *half) flush(t *Tracker, out sink) {
	for len(h.bufs) > 0 {
		h.skip(seqDiff(h.bufs[0].seq, h.next), ReasonClose, out)
		h.drain(t, out)
	}
	if h.finSet && seqDiff(h.finSeq, h.next) > 0 {
		h.skip(seqDiff(h.finSeq, h.next), ReasonClose, out)
	}
	h.drain(t, out)
	h.checkDone()
}

func (h *half) checkDone() {
	if h.finSet && seqDiff(h.next, h.finSeq) >= 0 {
		h.done = true
	}
}

// final returns the loss account with the implied length filled in.
func (h *half) final() Loss {
	l := h.loss
	l.BytesImplied = h.offset
	return l
}
