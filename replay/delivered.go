package replay

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/pace"
)

// deliveryMark is what replay knows of one connection's messages of the
// replayed direction (by Tapline-Seq), kept in the durable's key-value
// bucket under the key "d<conn>" so a replay that starts after a crash
// neither sends twice what the test system already confirmed nor sends
// again, silently, what may have reached it.
//
//   - Done: every message with seq <= Done, and each seq in Above, was
//     handled (confirmed delivered and reported, or skipped/failed and
//     reported) before its acknowledgement: a redelivery of it is
//     acknowledged without sending.
//   - Written: the highest seq whose last frame replay may have begun to
//     write. Written is recorded before that write, so a message in
//     (Done, Written] and not in Above was possibly read by the test
//     system but never confirmed: it is in doubt, and reported so instead
//     of being sent again.
//
// DoneStream and WrittenStream are the highest stream sequences of those
// messages' last chunks: a verdict applies only to entries at or below
// them, so a later message that reuses a seq (a reassembler restarted
// inside the connection) is never taken for one handled before.
type deliveryMark struct {
	Done          uint64   `json:"d"`
	Above         []uint64 `json:"x,omitempty"`
	Written       uint64   `json:"w"`
	DoneStream    uint64   `json:"ds,omitempty"`
	WrittenStream uint64   `json:"ws,omitempty"`
}

// maxMarkAbove bounds Above: beyond it the lowest seqs not yet handled are
// taken as handled (a consumer that started in the middle of a connection
// never sees its first seqs).
const maxMarkAbove = 256

// markAhead bounds how many queued messages one intent record covers (the
// intent is written once per batch rather than per message; after a crash
// the batch's messages not yet written are reported in doubt too).
const markAhead = 64

// doneSeq reports whether the message seq, an entry of which has stream
// sequence stream, was handled according to the mark.
func (m *deliveryMark) doneSeq(seq, stream uint64) bool {
	return stream <= m.DoneStream && m.handled(seq)
}

// handled reports whether seq is among the handled seqs.
func (m *deliveryMark) handled(seq uint64) bool {
	if seq <= m.Done {
		return true
	}
	_, ok := slices.BinarySearch(m.Above, seq)
	return ok
}

// inDoubt reports whether seq may have been read by the test system
// without being confirmed.
func (m *deliveryMark) inDoubt(seq, stream uint64) bool {
	return seq <= m.Written && stream <= m.WrittenStream && !m.handled(seq)
}

// add records the message seq, whose last chunk has stream sequence
// stream, as handled, and compacts Above into Done.
func (m *deliveryMark) add(seq, stream uint64) {
	m.DoneStream = max(m.DoneStream, stream)
	m.WrittenStream = max(m.WrittenStream, m.DoneStream)
	if m.handled(seq) {
		return
	}
	i, _ := slices.BinarySearch(m.Above, seq)
	m.Above = slices.Insert(m.Above, i, seq)
	for len(m.Above) > 0 && (m.Above[0] == m.Done+1 || len(m.Above) > maxMarkAbove) {
		m.Done = m.Above[0]
		m.Above = m.Above[1:]
	}
	if len(m.Above) == 0 {
		m.Above = nil
	}
	if m.Written < m.Done {
		m.Written = m.Done
	}
}

func (m deliveryMark) clone() deliveryMark {
	m.Above = slices.Clone(m.Above)
	return m
}

// markKey is the key of a connection's delivery mark.
func markKey(conn string) string {
	return "d" + strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(conn)), "=")
}

// getMark reads a connection's delivery mark; ok is false when none was
// recorded.
func (l *openLedger) getMark(ctx context.Context, conn string) (m deliveryMark, ok bool, err error) {
	v, err := l.kv.Get(ctx, markKey(conn))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	if err := json.Unmarshal(v.Value(), &m); err != nil {
		return m, false, err
	}
	slices.Sort(m.Above)
	return m, true, nil
}

// putMark records a connection's delivery mark.
func (l *openLedger) putMark(ctx context.Context, conn string, m deliveryMark) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = l.kv.Put(ctx, markKey(conn), b)
	return err
}

// loadMark reads the connection's delivery mark when the worker starts:
// what a previous replay (or this one, before the connection idled out)
// recorded. Without the bucket nothing is known and every message is new.
func (w *worker) loadMark() {
	w.markLoaded = true
	if w.r.opens == nil || w.r.cfg.noDeliveryLedger {
		return
	}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(w.r.wctx, 5*time.Second)
		m, ok, err := w.r.opens.getMark(ctx, w.id)
		cancel()
		if err == nil {
			if ok {
				w.prev, w.mark, w.led = m.clone(), m.clone(), m
			}
			return
		}
		w.r.log.Warn("delivery ledger: read", "conn", w.id, "err", err)
		if w.r.wctx.Err() != nil || sleepCtx(w.r.wctx, 250*time.Millisecond) != nil {
			return
		}
	}
}

// putLedger changes the stored delivery ledger and writes it, retrying
// while NATS is unreachable: what it records must be stored before the
// acknowledgements or writes that rely on it. The worker (intents) and
// the settler (handled messages, once their results are stored) both
// write it, one at a time, so a write never undoes another's. It returns
// false only when replay is stopping.
func (w *worker) putLedger(ctx context.Context, change func(*deliveryMark)) bool {
	if w.r.opens == nil || w.r.cfg.noDeliveryLedger {
		return true
	}
	w.ledMu.Lock()
	defer w.ledMu.Unlock()
	change(&w.led)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := w.r.opens.putMark(pctx, w.id, w.led)
		cancel()
		if err == nil {
			return true
		}
		w.r.m.errors.WithLabelValues("ledger").Inc()
		w.r.log.Warn("delivery ledger: write", "conn", w.id, "err", err)
		if ctx.Err() != nil || sleepCtx(ctx, 250*time.Millisecond) != nil {
			return false
		}
	}
}

// ledger is a copy of the stored delivery ledger.
func (w *worker) ledger() deliveryMark {
	w.ledMu.Lock()
	defer w.ledMu.Unlock()
	return w.led.clone()
}

// intend records, before the last frame of message seq is written, that
// it may reach the test system. Unpaced (--pace fast without rate caps),
// one record covers the messages already queued behind it (at most
// markAhead), so a backlog of small messages costs one write per batch;
// paced, each message gets its own record while it waits for its time.
func (w *worker) intend(ctx context.Context, seq, stream uint64) bool {
	if seq <= w.saved && stream <= w.savedStream || w.r.opens == nil || w.r.cfg.noDeliveryLedger {
		return true
	}
	ahead, aheadStream := seq, stream
	if p := w.r.cfg.pace; p.Mode == pace.Fast && p.RateMsgs == 0 && p.RateBytes == 0 {
		// Unpaced: cover the messages queued behind this one. (Paced,
		// queued messages wait for their time, and a record covering
		// them would put them in doubt long before they are written.)
		w.q.mu.Lock()
		for _, e := range w.q.items {
			c := &e.chunk
			if e.kind == proto.KindData && c.Dir == w.sendDir() && c.Last && c.Complete && c.Seq > ahead && c.Seq <= seq+markAhead {
				ahead = c.Seq
				aheadStream = max(aheadStream, e.streamSeq)
			}
		}
		w.q.mu.Unlock()
	}
	var saved, savedStream uint64
	w.releaseWrites() // what was written must not wait for the ledger
	ok := w.putLedger(ctx, func(m *deliveryMark) {
		m.Written = max(m.Written, ahead)
		m.WrittenStream = max(m.WrittenStream, aheadStream)
		saved, savedStream = m.Written, m.WrittenStream
	})
	if ok {
		w.saved, w.savedStream = saved, savedStream
	}
	return ok
}

// settleMark records, when the connection stops being replayed here (its
// settler has stored everything), that nothing beyond what was really
// written is in doubt (the intent covered queued messages ahead), keeping
// what a previous replay left in doubt.
func (w *worker) settleMark() {
	if w.r.opens == nil || w.r.cfg.noDeliveryLedger || !w.markLoaded {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.putLedger(ctx, func(m *deliveryMark) {
		m.Written = min(m.Written, max(w.written, w.prev.Written, m.Done))
		m.WrittenStream = min(m.WrittenStream, max(w.writtenStream, w.prev.WrittenStream, m.DoneStream))
	})
}

// priorOutcome decides a chunk of the replayed direction against the
// delivery mark: "done" (handled before: acknowledged without sending),
// "doubt" (a data message a previous replay may have delivered without
// confirmation) or "" (to be sent).
func (w *worker) priorOutcome(c *proto.Chunk, stream uint64) string {
	if !w.markLoaded {
		w.loadMark()
	}
	switch {
	case w.mark.doneSeq(c.Seq, stream):
		return "done"
	case w.prev.inDoubt(c.Seq, stream) && proto.DataOpcode(c.Opcode):
		return "doubt"
	}
	return ""
}

// reasonInDoubt is the reason of a message reported in doubt.
const reasonInDoubt = "in doubt: replay stopped after writing the message and before the test system confirmed it; it may or may not have been received, and is not sent again"

// skipPrior acknowledges a chunk decided by priorOutcome; the last chunk
// of a message in doubt publishes its result.
func (w *worker) skipPrior(e *entry, outcome string) {
	c := &e.chunk
	if outcome != "doubt" || !c.Last {
		w.r.ack(e)
		return
	}
	w.mark.add(c.Seq, e.streamSeq)
	w.sum.InDoubt++
	w.r.m.messages.WithLabelValues(ResultInDoubt).Inc()
	w.emit(w.r.msgResult(w, e, ResultInDoubt, reasonInDoubt, 0), e.streamSeq)
}
