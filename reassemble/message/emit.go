package message

import (
	"sync"

	"github.com/tapline/tapline/proto"
)

// chunkPool recycles full-size chunk buffers between large messages, so a
// connection does not keep 1 MiB after its last large message and a busy
// decoder does not allocate one per message.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, proto.MaxChunk); return &b }}

// bigMessage is the size from which a message's buffer comes from chunkPool.
const bigMessage = 64 << 10

// emitter turns the payload of one direction's messages into ordered
// chunks of at most proto.MaxChunk bytes. At most one data message is open
// at a time; control messages (single chunk) may be emitted while it is.
// A message's Seq is assigned when its first chunk is emitted, so a small
// fragmented message gets its Seq after a control frame that arrived
// between its fragments.
type emitter struct {
	s     *side
	seq   uint64
	open  bool
	c     proto.Chunk // the open message's metadata
	buf   []byte
	sized int64 // payload bytes accepted into the open message
	cut   bool  // the message exceeded Limits.MaxMessage or Limits.MaxInflation
	wire  int64 // compressed messages: payload bytes inflated so far, at the end all of them
	seqed bool
}

// begin opens a data message.
func (e *emitter) begin(opcode string, compressed bool, ts int64) {
	e.open = true
	e.c = proto.Chunk{Opcode: opcode, Complete: true, Compressed: compressed, FirstNs: ts, LastNs: ts}
	e.buf = e.buf[:0]
	e.sized = 0
	e.wire = 0
	e.cut = false
	e.seqed = false
}

// reserve makes room for n more payload bytes in the chunk buffer.
func (e *emitter) reserve(n uint64) {
	want := uint64(len(e.buf)) + n
	if want > proto.MaxChunk {
		want = proto.MaxChunk
	}
	if uint64(cap(e.buf)) >= want {
		return
	}
	var nb []byte
	if want >= bigMessage {
		nb = (*chunkPool.Get().(*[]byte))[:0]
	} else {
		nb = make([]byte, 0, want)
	}
	nb = append(nb, e.buf...)
	e.release()
	e.buf = nb
}

// release gives a pooled buffer back.
func (e *emitter) release() {
	if cap(e.buf) == proto.MaxChunk {
		b := e.buf[:0]
		chunkPool.Put(&b)
	}
	e.buf = nil
}

// incomplete flags the open message as touched by loss of missing bytes,
// for reason (a proto.Reason value; the first one given is kept).
func (e *emitter) incomplete(missing int64, reason string) {
	e.c.Complete = false
	e.c.Missing += missing
	if e.c.Reason == "" {
		e.c.Reason = reason
	}
}

// limit is the size at which the open message is cut, and the reason it
// is then flagged with: Limits.MaxMessage, or for a compressed message
// what Limits.MaxInflation allows for the compressed bytes seen so far.
func (e *emitter) limit() (int64, string) {
	limit, reason := e.s.d.lim.MaxMessage, proto.ReasonTooLarge
	if r := int64(e.s.d.lim.MaxInflation); e.c.Compressed && r > 0 && e.wire < limit/r {
		if allow := max(InflationFree, r*e.wire); allow < limit {
			limit, reason = allow, proto.ReasonInflationLimit
		}
	}
	return limit, reason
}

// write adds payload bytes to the open message, emitting full chunks.
// Bytes past the limit (see limit) are dropped and the message is flagged.
func (e *emitter) write(p []byte, ts int64) {
	if !e.open || e.cut {
		return
	}
	e.c.LastNs = ts
	limit, reason := e.limit()
	if room := limit - e.sized; int64(len(p)) > room {
		p = p[:max(room, 0)]
		e.cut = true
		e.c.Complete = false
		if e.c.Reason == "" {
			e.c.Reason = reason
		}
	}
	e.sized += int64(len(p))
	for len(p) > 0 {
		if len(e.buf) == proto.MaxChunk {
			e.flush(false)
		}
		if len(e.buf)+len(p) > cap(e.buf) && cap(e.buf) < proto.MaxChunk {
			e.reserve(uint64(max(len(p), 2*cap(e.buf), 512)))
		}
		n := min(proto.MaxChunk-len(e.buf), len(p))
		e.buf = append(e.buf, p[:n]...)
		p = p[n:]
	}
}

// end emits the last chunk of the open message, with tail as its final
// bytes. When nothing is buffered the tail is emitted without a copy.
func (e *emitter) end(tail []byte, ts int64) {
	if !e.open {
		return
	}
	e.c.LastNs = ts
	if len(e.buf) == 0 && len(tail) <= proto.MaxChunk && !e.cut &&
		e.sized+int64(len(tail)) <= e.s.d.lim.MaxMessage {
		e.sized += int64(len(tail))
		e.emit(tail, true)
	} else {
		e.write(tail, ts)
		e.flush(true)
	}
	e.open = false
	if e.c.Complete {
		e.s.stats.MessagesComplete++
	} else {
		e.s.stats.MessagesIncomplete++
	}
	if cap(e.buf) >= bigMessage {
		e.release() // do not keep a large buffer for an idle connection
	}
}

func (e *emitter) flush(last bool) {
	e.emit(e.buf, last)
	e.buf = e.buf[:0]
}

func (e *emitter) emit(body []byte, last bool) {
	if !e.seqed {
		e.seq++
		e.c.Seq = e.seq
		e.c.Index = 0
		e.seqed = true
	}
	e.c.Last = last
	if last {
		e.c.Size = e.sized
		if e.c.Compressed {
			e.c.WireSize = e.wire
		}
	}
	e.s.d.fill(&e.c, e.s.dir)
	e.s.d.out.Chunk(&e.c, body)
	e.c.Index++
}

// single emits a control frame (ping, pong, close) as a one-chunk message.
// reason says why it is incomplete (empty when complete).
func (e *emitter) single(opcode string, body []byte, complete bool, missing int64, reason string, closeCode int, first, last int64) {
	e.seq++
	c := proto.Chunk{
		Seq: e.seq, Last: true, Opcode: opcode, Complete: complete, Missing: missing,
		CloseCode: closeCode, FirstNs: first, LastNs: last, Size: int64(len(body)), Reason: reason,
	}
	e.s.d.fill(&c, e.s.dir)
	e.s.d.out.Chunk(&c, body)
	// Control frames are not messages an application receives: they are
	// counted apart, so the message counts match what production got.
	e.s.stats.ControlFrames++
	if !complete {
		e.s.stats.ControlIncomplete++
	}
}
