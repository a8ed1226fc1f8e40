package replay

import (
	"context"
	"sync"
)

// settleItem is what one step of a connection's work leaves to settle:
// results to store on TAPLINE_RESULTS and the stream entries to
// acknowledge once they are (and once the delivery ledger records the
// messages those results report).
type settleItem struct {
	results []pendingResult
	acks    []uint64
}

// settleQueue bounds the items a connection's settler may be behind its
// worker; beyond it the worker waits (results cannot be stored, say
// during a NATS outage, and nothing can be acknowledged either).
const settleQueue = 256

// settleBatch bounds the items one round of the settler stores together.
const settleBatch = 64

// settler stores a connection's results and then acknowledges what they
// report, in the order the worker produced them, while the worker goes on
// writing to the test system: the results round trip is never part of a
// message's delivery. A message's entries are acknowledged, and the
// message recorded handled in the delivery ledger, only after its result
// was stored (retried, with the same Msg-Id, until it is): a result that
// cannot be stored leaves the message unacknowledged, so JetStream
// redelivers it, instead of a message delivered with no account of it.
type settler struct {
	w         *worker
	in        chan settleItem
	done      chan struct{}
	abandoned bool // replay stopped before everything was settled (set before done closes)

	mu    sync.Mutex
	owned map[uint64]int // stream sequences acknowledged once their results are stored
}

func newSettler(w *worker) *settler {
	s := &settler{w: w, in: make(chan settleItem, settleQueue), done: make(chan struct{}), owned: map[uint64]int{}}
	go s.run(w.r.sctx)
	return s
}

// add hands an item to the settler; it waits only when the settler is
// settleQueue items behind. Called by the worker.
func (s *settler) add(it settleItem) {
	if len(it.results) == 0 && len(it.acks) == 0 {
		return
	}
	s.mu.Lock()
	for _, a := range it.acks {
		s.owned[a]++
	}
	s.mu.Unlock()
	select {
	case s.in <- it:
		return
	default:
	}
	// The settler is behind: the frames held for one write must not wait
	// with the worker (coalesce.go).
	s.w.releaseWrites()
	select {
	case s.in <- it:
	case <-s.done: // stopped: the entries stay held and are handed back
	}
}

// owns reports whether the acknowledgement of the entry with stream
// sequence seq was handed to the settler (its message is handled).
func (s *settler) owns(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned[seq] > 0
}

// close waits until everything handed over is settled, or abandoned when
// replay stops; it reports whether everything was settled.
func (s *settler) close() bool {
	close(s.in)
	<-s.done
	return !s.abandoned
}

func (s *settler) run(ctx context.Context) {
	defer close(s.done)
	for it := range s.in {
		batch := []settleItem{it}
	more:
		for len(batch) < settleBatch {
			select {
			case next, ok := <-s.in:
				if !ok {
					break more
				}
				batch = append(batch, next)
			default:
				break more
			}
		}
		if !s.settle(ctx, batch) {
			// Replay stops: what is not settled stays unacknowledged and
			// is handed back (or redelivered after a crash).
			s.abandoned = true
			for range s.in {
			}
			return
		}
	}
}

// settle stores the batch's results, records the messages they report in
// the delivery ledger, then acknowledges the batch's entries. It returns
// false when ctx ended first.
func (s *settler) settle(ctx context.Context, batch []settleItem) bool {
	w := s.w
	var rs []pendingResult
	for _, it := range batch {
		rs = append(rs, it.results...)
	}
	if !w.r.res.store(ctx, rs) {
		return false
	}
	var handled []pendingResult
	for _, pr := range rs {
		if pr.handles(w.sendDir()) {
			handled = append(handled, pr)
		}
	}
	if len(handled) > 0 && !w.putLedger(ctx, func(m *deliveryMark) {
		for _, pr := range handled {
			m.add(pr.res.Seq, pr.stream)
		}
	}) {
		return false
	}
	for _, it := range batch {
		for _, a := range it.acks {
			w.r.acks.ack(a)
		}
	}
	s.mu.Lock()
	for _, it := range batch {
		for _, a := range it.acks {
			if s.owned[a]--; s.owned[a] <= 0 {
				delete(s.owned, a)
			}
		}
	}
	s.mu.Unlock()
	return true
}

// emit hands one result and the entries it accounts for to the settler.
func (w *worker) emit(pr pendingResult, acks ...uint64) {
	w.st.add(settleItem{results: []pendingResult{pr}, acks: acks})
}

// emitResult hands a result that accounts for no stream entry (a
// comparison, a connection-level failure, a summary) to the settler.
func (w *worker) emitResult(r Result) { w.emit(otherResult(r)) }

// handledAtOnce reports whether the message whose last chunk has stream
// sequence seq is done with: acknowledged, or to be acknowledged once its
// result is stored (not waiting for the test system's confirmation).
func (w *worker) handledAtOnce(seq uint64) bool {
	return !w.r.acks.holds(seq) || w.st.owns(seq)
}
