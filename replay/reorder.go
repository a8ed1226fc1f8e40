package replay

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tapline/tapline/proto"
)

// maxHeldChunks bounds, per connection, the chunks kept back because an
// earlier chunk of their message has not arrived yet (after restarts
// JetStream may redeliver a message's chunks out of order; reassemble
// stores fewer than this ahead of a resent one). A held chunk keeps only
// its metadata: its payload is fetched again from the stream when its
// turn comes, so the bound costs no payload memory.
const maxHeldChunks = proto.ReorderChunks

// holdAhead keeps back a chunk that came before an earlier chunk of the
// message being sent; it returns false when the bound is reached.
func (w *worker) holdAhead(m *outMsg, e *entry) bool {
	if prev, ok := m.ahead[e.chunk.Index]; ok {
		if prev != e {
			w.r.ack(e) // the same chunk twice: one is enough
		}
		return true
	}
	if len(m.ahead)+len(w.early) >= maxHeldChunks {
		return false
	}
	if m.ahead == nil {
		m.ahead = map[int]*entry{}
	}
	if len(m.ahead) == 0 {
		w.heldSince = time.Now()
	}
	m.ahead[e.chunk.Index] = e
	return true
}

// heldWait is how long a message waits for a missing chunk while later
// ones are held: a delivery lost with a NATS restart comes again after an
// ack wait, noticed at the server's next check, and meanwhile the
// message's writer holds its test connection (in listen mode, every
// connection of the listen address).
func (w *worker) heldWait() time.Duration { return w.r.redeliveryWait() }

// redeliveryWait bounds how long an entry JetStream must redeliver can
// take to come: its ack wait expires, the server notices at its next
// check (up to another ack wait), plus a margin.
func (r *runner) redeliveryWait() time.Duration { return 2*r.cfg.AckWait + 5*time.Second }

// heldLeft is the time left before the current message's wait for a
// missing chunk ends; ok is false when nothing is held.
func (w *worker) heldLeft() (time.Duration, bool) {
	if w.cur == nil || len(w.cur.ahead) == 0 || w.cur.skip {
		return 0, false
	}
	return max(time.Until(w.heldSince.Add(w.heldWait())), time.Millisecond), true
}

// expireHeld gives up the current message when its missing chunk did not
// come within heldWait: it cannot be finished exactly.
func (w *worker) expireHeld(ctx context.Context) {
	m := w.cur
	if m == nil || len(m.ahead) == 0 || m.skip || time.Since(w.heldSince) < w.heldWait() {
		return
	}
	if w.stopStreaming(ctx, m, fmt.Sprintf("chunk %d did not come within %s while later chunks were held: message aborted, never finished out of order", m.last.Index+1, w.heldWait())) {
		w.drainAhead(ctx)
	}
}

// drainAhead sends the held chunks of the current message whose turn has
// come (all of them, in order, once the message is being skipped).
func (w *worker) drainAhead(ctx context.Context) {
	for ctx.Err() == nil {
		m := w.cur
		if m == nil || len(m.ahead) == 0 {
			return
		}
		var next *entry
		if m.skip {
			idx := make([]int, 0, len(m.ahead))
			for i := range m.ahead {
				idx = append(idx, i)
			}
			next = m.ahead[slices.Min(idx)]
		} else if next = m.ahead[m.last.Index+1]; next == nil {
			return // still waiting for the missing chunk
		}
		delete(m.ahead, next.chunk.Index)
		if next.data == nil {
			if err := w.refetch(ctx, next); err != nil {
				return // stopping: it stays held and is handed back
			}
		}
		w.sendChunk(ctx, next)
		w.release(next)
		if next.chunk.Last && w.handledAtOnce(next.streamSeq) {
			w.mark.add(next.chunk.Seq, next.streamSeq)
		}
	}
}

// dropAhead acknowledges the held chunks of a message given up (its
// result is published by whoever gave it up).
func (w *worker) dropAhead(m *outMsg) {
	for _, e := range m.ahead {
		w.r.ack(e)
	}
	m.ahead = nil
}

// holdEarly keeps back a chunk of a message whose first chunk has not
// arrived yet; it returns false when the bound is reached.
func (w *worker) holdEarly(e *entry) bool {
	for _, h := range w.early {
		if h.chunk.Seq == e.chunk.Seq && h.chunk.Index == e.chunk.Index {
			w.r.ack(e)
			return true
		}
	}
	n := len(w.early)
	if w.cur != nil {
		n += len(w.cur.ahead)
	}
	if n >= maxHeldChunks {
		return false
	}
	w.early = append(w.early, e)
	return true
}

// takeEarly moves the held chunks of the message m begins into m, and
// gives up those of earlier messages (their first chunks never came).
func (w *worker) takeEarly(m *outMsg) {
	keep := w.early[:0]
	for _, e := range w.early {
		switch {
		case e.chunk.Seq == m.first.Seq:
			if m.ahead == nil {
				m.ahead = map[int]*entry{}
			}
			if _, dup := m.ahead[e.chunk.Index]; dup {
				w.r.ack(e)
			} else {
				m.ahead[e.chunk.Index] = e
			}
		case e.chunk.Seq < m.first.Seq:
			w.firstNotSeen(e)
		default:
			keep = append(keep, e)
		}
	}
	clear(w.early[len(keep):])
	w.early = keep
}

// flushEarly gives up every held chunk of a message never begun.
func (w *worker) flushEarly() {
	for _, e := range w.early {
		w.firstNotSeen(e)
	}
	w.early = nil
}

// firstNotSeen acknowledges a chunk of a message whose first chunks
// replay never saw; its last chunk reports the message.
func (w *worker) firstNotSeen(e *entry) {
	if !e.chunk.Last {
		w.r.ack(e)
		return
	}
	w.sum.Skipped++
	w.mark.add(e.chunk.Seq, e.streamSeq)
	w.emit(w.r.msgResult(w, e, "skipped", "first chunks of the message were not seen by replay", 0), e.streamSeq)
}
