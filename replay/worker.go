package replay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/compare"
)

// Confirmation thresholds: a worker asks the test system to confirm what
// it read (a ping) when its queue runs empty, or after this many messages
// or bytes.
const (
	confirmEveryMsgs  = 256
	confirmEveryBytes = 8 << 20
	confirmEveryTime  = 50 * time.Millisecond
)

var errGaveUp = errors.New("gave up reconnecting to the test system")

// queue is an unbounded FIFO of entries for one connection. Entries whose
// payload did not fit the in-flight budget carry no data and are fetched
// again from the stream when processed, so the dispatcher never blocks on
// a slow connection.
type queue struct {
	mu     sync.Mutex
	items  []*entry
	signal chan struct{}
}

func newQueue() *queue { return &queue{signal: make(chan struct{}, 1)} }

func (q *queue) push(e *entry) {
	q.mu.Lock()
	q.items = append(q.items, e)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *queue) pop() (*entry, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, false
	}
	e := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	return e, true
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// outMsg is a message being sent, or sent and not yet confirmed.
type outMsg struct {
	first   proto.Chunk // metadata of chunk 0
	last    proto.Chunk // metadata of the last chunk seen
	parts   []uint64    // stream sequences of the chunks written
	w       msgWriter   // open while streaming
	size    int64
	marked  bool
	skip    bool   // the rest of the message is acknowledged without sending
	reason  string // why skipped
	arrived time.Time
	tries   int
	ahead   map[int]*entry // chunks held until their turn (reorder.go)
	sent    hubSent        // listen mode: where it was written whole
}

// lastStream is the highest stream sequence of the message's chunks.
func (m *outMsg) lastStream() uint64 {
	var s uint64
	for _, p := range m.parts {
		s = max(s, p)
	}
	return s
}

// worker replays one original connection.
type worker struct {
	r     *runner
	id    string
	vni   uint32
	shard int
	q     *queue

	open     *proto.OpenEvent
	openSeq  uint64 // stream sequence of the open event, acknowledged when the connection ends
	closeSeq uint64 // stream sequence of the close event, acknowledged with the open event
	client   string
	server   string
	protocol string // websocket or tcp
	decided  bool
	filtered string // non-empty: why the connection is not replayed
	// undeliverable: filtered because the target can never take the
	// connection's messages; each is counted as not deliverable.
	undeliverable bool
	lastSeq       uint64 // highest message seq of the replayed direction seen
	hub           *hub

	sink        sink
	slot        bool // holds a --max-conns slot
	failingFrom time.Time
	backoff     time.Duration
	failed      bool // gave up: everything is reported failed

	cur         *outMsg
	early       []*entry  // chunks held until their message's first chunk comes (reorder.go)
	heldSince   time.Time // when the current message began to wait for a missing chunk
	unconfirmed []*outMsg
	unconfBytes int64
	unconfSince time.Time
	pinging     bool            // an asynchronous confirmation is in flight
	pingDone    chan pingResult // its outcome (capacity 1)

	// Delivery ledger (delivered.go): what a previous replay left, what
	// is known now, what is stored (led, written by the worker's intents
	// and the settler), the Written last stored, the highest seq written.
	markLoaded    bool
	prev          deliveryMark
	mark          deliveryMark
	ledMu         sync.Mutex
	led           deliveryMark
	saved         uint64
	written       uint64
	writtenStream uint64
	savedStream   uint64

	st *settler // stores results, then acknowledges what they report

	cmp *compare.Conn
	// notCompared says why the responses of this connection are not
	// compared although --compare is on (a sink test system).
	notCompared string
	// credsNote says which production credentials reassemble did not
	// store although --forward-credentials asks for them (credentials.go).
	credsNote string
	expect    *compare.Builder // production response being received (dial mode)
	tcpExp    *compare.Builder // production byte stream of a raw TCP connection
	sum       ConnSummary
}

func newWorker(r *runner, e *entry) *worker {
	w := &worker{r: r, id: e.conn, vni: e.vni, shard: e.shard, q: newQueue(), pingDone: make(chan pingResult, 1)}
	w.st = newSettler(w)
	return w
}

func (w *worker) sendDir() proto.Direction { return proto.Direction(w.r.cfg.Dir) }

// run processes the connection's entries until its close event, the idle
// timeout or shutdown.
func (w *worker) run(ctx context.Context) {
	idle := time.NewTimer(w.r.cfg.ConnIdle)
	defer idle.Stop()
	confirmT := time.NewTimer(time.Hour)
	confirmT.Stop()
	end := "shutdown"
	// The worker stays the connection's worker until it has finished:
	// entries arriving meanwhile (redeliveries of its last messages, say)
	// wait in its queue and are judged afterwards against the delivery
	// ledger as it is once everything was confirmed (retire).
	defer func() {
		w.finish(end)
		w.r.retire(w, end)
	}()
	heldT := time.NewTimer(time.Hour)
	heldT.Stop()
	defer heldT.Stop()
	for {
		w.expireHeld(ctx)
		e, ok := w.q.pop()
		if !ok {
			w.releaseWrites() // the frames held while the queue had entries (coalesce.go)
			// Queue empty: confirm what was written once it is
			// confirmEveryTime old (one ping per batch, not per message),
			// then wait for more.
			var confirmC <-chan time.Time
			if len(w.unconfirmed) > 0 && !w.pinging {
				d := confirmEveryTime - time.Since(w.unconfSince)
				if d <= 0 {
					if err := w.startConfirm(ctx); err != nil && ctx.Err() != nil {
						return
					}
					continue
				}
				confirmT.Reset(d)
				confirmC = confirmT.C
			}
			var pingC <-chan pingResult
			if w.pinging {
				pingC = w.pingDone
			}
			var heldC <-chan time.Time
			if d, ok := w.heldLeft(); ok {
				heldT.Reset(d)
				heldC = heldT.C
			}
			select {
			case <-heldC:
				continue
			case <-confirmC:
				continue
			case res := <-pingC:
				confirmT.Stop()
				w.handlePing(ctx, res)
				continue
			case <-w.q.signal:
				confirmT.Stop()
				heldT.Stop()
				if !idle.Stop() {
					select {
					case <-idle.C:
					default:
					}
				}
				idle.Reset(w.r.cfg.ConnIdle)
				continue
			case <-idle.C:
				confirmT.Stop()
				if w.q.len() == 0 {
					end = "idle"
					return
				}
				idle.Reset(w.r.cfg.ConnIdle)
				continue
			case <-ctx.Done():
				confirmT.Stop()
				return
			}
		}
		if e.data == nil && e.held < 0 {
			w.releaseWrites()
			if err := w.refetch(ctx, e); err != nil {
				return
			}
		}
		w.holdWrites()
		closed := w.handle(ctx, e)
		if closed {
			end = "close"
			if ctx.Err() != nil {
				return // the close event was acknowledged: finish the connection
			}
		} else if ctx.Err() != nil {
			return
		}
		w.pollPing(ctx)
		switch {
		case len(w.unconfirmed) >= 4*confirmEveryMsgs || w.unconfBytes >= 4*confirmEveryBytes:
			// The test system confirms slower than replay writes: wait.
			if err := w.confirm(ctx); err != nil && ctx.Err() != nil {
				return
			}
		case len(w.unconfirmed) >= confirmEveryMsgs || w.unconfBytes >= confirmEveryBytes ||
			(len(w.unconfirmed) > 0 && time.Since(w.unconfSince) >= confirmEveryTime):
			if err := w.startConfirm(ctx); err != nil && ctx.Err() != nil {
				return
			}
		}
		if closed {
			end = "close"
			return
		}
	}
}

// refetch loads the payload of an entry queued without it.
func (w *worker) refetch(ctx context.Context, e *entry) error {
	for {
		data, err := w.r.fetch(ctx, e.streamSeq)
		if err == nil {
			e.data, e.held = data, 0
			return nil
		}
		w.r.m.errors.WithLabelValues("fetch").Inc()
		w.r.log.Warn("fetch chunk from stream", "seq", e.streamSeq, "err", err)
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
}

// release frees an entry's payload from the in-flight budget.
func (w *worker) release(e *entry) { w.r.release(e) }

// release frees an entry's payload from the in-flight budget.
func (r *runner) release(e *entry) {
	if e.held > 0 {
		r.budget.release(e.held)
		e.held = 0
	}
	e.data = nil
}

// handle processes one entry; it returns true when the connection ended.
func (w *worker) handle(ctx context.Context, e *entry) bool {
	defer w.release(e)
	if !w.decided && e.kind == proto.KindGap {
		// A gap event names neither the connection's server nor its
		// path: deciding on it (redelivered before the open event,
		// say) could filter the connection, and its messages would be
		// acknowledged unreported. Decide on its open event, recorded
		// or to come, or its first message.
		if open := w.r.recoverOpen(w.id); open != nil {
			w.decide(&entry{kind: proto.KindOpen, conn: w.id, open: open})
		} else {
			w.sum.Gaps++
			w.r.ack(e)
			return false
		}
	}
	if !w.decided {
		w.decide(e)
	} else if e.open != nil && w.open == nil {
		w.open = e.open
	}
	switch e.kind {
	case proto.KindOpen:
		// The open event stays unacknowledged while the connection is
		// replayed: after a replay restart it is redelivered first, so the
		// resumed connection keeps its path, subprotocol and headers.
		if w.openSeq != 0 {
			w.r.acks.ack(w.openSeq)
		}
		w.openSeq = e.streamSeq
		if w.r.opens != nil {
			if err := w.r.opens.put(w.id, e.streamSeq); err != nil {
				w.r.log.Warn("open event ledger", "conn", w.id, "err", err)
			}
		}
		if w.filtered == "" && !w.failed && w.r.listen == nil {
			// Connect now, as production did, so the test system sees
			// the connection even before the first message.
			if err := w.ensure(ctx); err != nil {
				w.giveUp(ctx, err)
			}
		}
		return false
	case proto.KindGap:
		w.sum.Gaps++
		w.r.ack(e)
		return false
	case proto.KindClose:
		w.sum.Loss = e.close
		// Acknowledged once the connection's results are stored: a
		// replay stopping before that gets it again, and the connection
		// its summary.
		w.closeSeq = e.streamSeq
		return true
	}
	c := &e.chunk
	if c.Dir == w.sendDir() && c.Seq > w.lastSeq {
		w.lastSeq = c.Seq
	}
	switch {
	case w.filtered != "":
		if w.undeliverable && c.Dir == w.sendDir() && c.Last {
			w.r.m.undeliver.Inc()
		}
		w.r.ack(e)
	case c.Dir == w.sendDir():
		w.sendChunk(ctx, e)
		if c.Last && w.handledAtOnce(e.streamSeq) {
			// Handled at once (skipped, aborted, failed, a control
			// message): nothing of it is left to send.
			w.mark.add(c.Seq, e.streamSeq)
		}
		w.drainAhead(ctx)
	case w.cmp != nil:
		w.expectChunk(e)
		w.r.ack(e)
	default:
		w.r.ack(e)
	}
	return false
}

// decide applies the filters when the connection's first entry is seen.
func (w *worker) decide(e *entry) {
	w.decided = true
	cfg := w.r.cfg
	path, host := "", ""
	open := e.open
	if open == nil {
		// Entries of a connection whose open event this replay has not
		// seen: it was acknowledged earlier (the connection idled out, or
		// a previous replay) or comes later among redeliveries. Recover
		// it from the stream.
		open = w.r.recoverOpen(w.id)
	}
	if open != nil {
		w.open = open
		w.client, w.server, w.protocol = open.Client, open.Server, open.Protocol
		path, host = open.Path, open.Host
	} else if e.kind == proto.KindData {
		w.client, w.server = e.chunk.Client, e.chunk.Server
		w.protocol = "websocket"
		if e.chunk.Opcode == proto.OpTCP {
			w.protocol = "tcp"
		}
	}
	w.sum.Client, w.sum.Server, w.sum.Path, w.sum.Protocol = w.client, w.server, path, w.protocol
	if open == nil && e.kind == proto.KindClose {
		// Nothing of the connection is left to replay.
		w.filtered = "connection started before replay (no open event or message seen)"
		return
	}
	if len(cfg.Servers) > 0 {
		ok := false
		for _, s := range cfg.Servers {
			ok = ok || serverMatch(s, w.server)
		}
		if !ok {
			w.filtered = "server " + w.server + " not selected by --server"
			return
		}
	}
	if len(cfg.MatchPaths) > 0 {
		ok := false
		for _, p := range cfg.MatchPaths {
			m, _ := pathMatch(p, path)
			ok = ok || m
		}
		if !ok {
			w.filtered = fmt.Sprintf("path %q not selected by --match-path", path)
			return
		}
	}
	if w.r.listen != nil {
		for _, h := range w.r.listen {
			if h.matches(w.server, path, host) {
				w.hub = h
				break
			}
		}
		if w.hub == nil {
			w.filtered = fmt.Sprintf("no --listen for upstream %s (path %q, host %q)", w.server, path, host)
		} else if w.protocol == "tcp" {
			w.markUndeliverable("raw TCP connection: --listen " + w.hub.spec.Addr + " serves WebSocket test connections only")
		}
		return
	}
	if w.protocol == "tcp" && cfg.tcpTarget == "" {
		w.filtered = "raw TCP connection and no tcp:// --target"
		return
	}
	if w.protocol != "tcp" && cfg.wsTarget == nil {
		w.filtered = "WebSocket connection and no ws:// or wss:// --target"
		return
	}
	if cfg.Compare {
		w.cmp = compare.NewConn(cfg.rules, w.reportComparison)
	}
}

// ensure connects the sink if needed, retrying with backoff, and rewrites
// everything written but not confirmed to the new connection.
func (w *worker) ensure(ctx context.Context) error {
	for w.sink == nil {
		if err := w.connect(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := w.failure(ctx, err); err != nil {
				return err
			}
			continue
		}
		if err := w.rewrite(ctx); err != nil {
			w.dropSink()
			if ctx.Err() != nil || isPermanent(err) {
				return ctx.Err()
			}
			if err := w.failure(ctx, err); err != nil {
				return err
			}
			continue
		}
		w.failingFrom, w.backoff = time.Time{}, 0
	}
	return nil
}

// failure records a failed attempt and waits before the next; it returns
// errGaveUp once the test system has refused the connection for --give-up.
func (w *worker) failure(ctx context.Context, err error) error {
	now := time.Now()
	if w.failingFrom.IsZero() {
		w.failingFrom = now
		w.r.log.Warn("test system unavailable, retrying", "conn", w.id, "err", err)
	}
	w.r.m.errors.WithLabelValues("dial").Inc()
	if g := w.r.cfg.GiveUp; g > 0 && w.r.listen == nil && now.Sub(w.failingFrom) >= g {
		return fmt.Errorf("%w after %s: %v", errGaveUp, now.Sub(w.failingFrom).Round(time.Second), err)
	}
	if w.backoff == 0 {
		w.backoff = w.r.cfg.RetryMin
	} else {
		w.backoff = min(2*w.backoff, w.r.cfg.RetryMax)
	}
	return sleepCtx(ctx, w.backoff)
}

func (w *worker) connect(ctx context.Context) error {
	if w.hub != nil {
		if err := w.hub.wait(ctx); err != nil {
			return err
		}
		w.sink = &hubSink{h: w.hub, writeTimeout: w.r.cfg.WriteTimeout}
		return nil
	}
	if !w.slot {
		if err := w.r.acquireSlot(ctx); err != nil {
			return err
		}
		w.slot = true
	}
	if w.protocol == "tcp" {
		s, err := dialTCP(ctx, w.r.cfg, w.cmp != nil)
		if err != nil {
			return err
		}
		if w.sink != nil {
			w.sum.Reconnects++
		}
		w.sink = s
	} else {
		var onResp func(compare.Message)
		if w.cmp != nil {
			onResp = w.cmp.Got
		}
		w.credsNote = w.r.credentialsRemoved(w.open)
		s, err := dialWS(ctx, w.r.cfg, w.r.client, w.open, onResp)
		if err != nil {
			return err
		}
		if s.sinkOnly && w.cmp != nil {
			w.cmp, w.notCompared = nil, sinkNotCompared
		}
		w.sink = s
	}
	return nil
}

// dropSink kills the current connection after a failure. A message being
// written is aborted, never just forgotten: its writer would otherwise
// stay open (in listen mode holding the listen address, so no other
// message could start) and could later finish another message.
func (w *worker) dropSink() {
	if w.cur != nil && w.cur.w != nil {
		w.cur.w.Abort("tapline: test connection failed inside the message; it is sent again")
		w.cur.w = nil
	}
	if w.sink != nil {
		w.sink.Kill()
		w.sink = nil
		w.sum.Reconnects++
	}
}

// rewrite sends every unconfirmed message again on a new connection, and
// the chunks written so far of the message in progress.
func (w *worker) rewrite(ctx context.Context) error {
	for _, m := range w.unconfirmed {
		if w.hub != nil {
			// Listen mode: written whole to test connections, the
			// message is confirmed by one of them or in doubt, never
			// sent again to others (the test system would get it twice).
			break
		}
		mw, err := w.beginMsg(ctx, m)
		if err != nil {
			return err
		}
		if err := w.writeParts(ctx, mw, m.parts); err != nil {
			mw.Abort("tapline: rewriting the message failed; it is sent again")
			return err
		}
		if err := mw.Close(); err != nil {
			return err
		}
		m.tries++
	}
	if m := w.cur; m != nil && !m.skip && len(m.parts) > 0 {
		mw, err := w.beginMsg(ctx, m)
		if err != nil {
			return err
		}
		if err := w.writeParts(ctx, mw, m.parts); err != nil {
			// Never left open: its test connections would hold a partial
			// message, and in listen mode the listen address.
			mw.Abort("tapline: rewriting the message failed; it is sent again")
			return err
		}
		m.w = mw
		m.tries++
	}
	return nil
}

func (w *worker) beginMsg(ctx context.Context, m *outMsg) (msgWriter, error) {
	mw, err := w.sink.Begin(ctx, m.first.Opcode)
	if err != nil {
		return nil, err
	}
	if m.marked {
		if _, err := mw.Write([]byte(w.r.cfg.IncompleteMarker)); err != nil {
			mw.Abort("tapline: writing the marker failed")
			return nil, err
		}
	}
	return mw, nil
}

func (w *worker) writeParts(ctx context.Context, mw msgWriter, parts []uint64) error {
	for _, seq := range parts {
		data, err := w.r.fetch(ctx, seq)
		if err != nil {
			w.r.m.errors.WithLabelValues("fetch").Inc()
			return fmt.Errorf("fetch chunk %d from the stream: %w", seq, err)
		}
		if _, err := mw.Write(data); err != nil {
			return err
		}
	}
	return nil
}

// sendChunk delivers one chunk of the replayed direction.
func (w *worker) sendChunk(ctx context.Context, e *entry) {
	c := &e.chunk
	cfg := w.r.cfg
	if out := w.priorOutcome(c, e.streamSeq); out != "" {
		w.skipPrior(e, out)
		return
	}
	if w.failed {
		if c.Last {
			w.emit(w.r.msgResult(w, e, "failed", "connection could not be recreated", 0), e.streamSeq)
		} else {
			w.r.ack(e)
		}
		return
	}
	if c.Index == 0 {
		if w.cur != nil {
			w.abortCur(ctx, "message ended without its last chunk")
		}
		w.cur = &outMsg{first: *c, arrived: e.arrived}
		if len(w.early) > 0 {
			w.takeEarly(w.cur)
		}
		if c.Opcode != proto.OpPing && c.Opcode != proto.OpPong && c.Opcode != proto.OpClose {
			if err := w.r.pacer.WaitMessage(ctx, c.FirstNs); err != nil {
				return
			}
		}
	} else if w.cur == nil || w.cur.first.Seq != c.Seq {
		// The message's first chunk has not come: it may be a late
		// redelivery (kept back, bounded), or the consumer started in
		// the middle of this message.
		if (w.cur == nil || w.cur.first.Seq < c.Seq) && w.holdEarly(e) {
			return
		}
		w.firstNotSeen(e)
		return
	}
	m := w.cur
	if c.Index != 0 && !m.skip {
		if c.Index <= m.last.Index {
			// A chunk already written (published again under another
			// stream sequence): writing it would repeat its bytes.
			w.r.ack(e)
			return
		}
		if c.Index != m.last.Index+1 {
			// A chunk is missing before this one (entries redelivered
			// out of order): keep this one back until the missing ones
			// come; beyond the bound the message cannot be finished
			// exactly.
			if w.holdAhead(m, e) {
				return
			}
			if !w.stopStreaming(ctx, m, fmt.Sprintf("chunk %d came after chunk %d with %d chunks already held back: message aborted, never finished out of order", c.Index, m.last.Index, maxHeldChunks)) {
				return
			}
		}
	}
	if c.Last && !m.skip && c.Complete && c.Size > 0 && m.size+int64(len(e.data)) != c.Size {
		// Finishing would deliver other bytes than the message's.
		if !w.stopStreaming(ctx, m, fmt.Sprintf("%d bytes written of a %d-byte message: message aborted, never finished with other bytes", m.size+int64(len(e.data)), c.Size)) {
			return
		}
	}
	m.last = *c
	if m.skip {
		w.ackOrFinishSkipped(e)
		return
	}
	switch c.Opcode {
	case proto.OpPing, proto.OpPong, proto.OpClose:
		w.sendControl(ctx, e)
		return
	}
	if !c.Complete {
		if c.Index == 0 && cfg.Incomplete == IncompleteMark {
			m.marked = true
		}
		if cfg.Incomplete == IncompleteSkip || (cfg.Incomplete == IncompleteMark && !m.marked) {
			if len(m.parts) == 0 {
				m.skip, m.reason = true, fmt.Sprintf("incomplete (%d bytes missing): skipped by --incomplete=%s", c.Missing, cfg.Incomplete)
				w.r.m.incomplete.WithLabelValues("skipped").Inc()
			} else {
				// Confirm the messages before this one: closing the
				// connection must not lose them.
				if err := w.confirm(ctx); err != nil {
					return
				}
				m.skip = true
				m.reason = fmt.Sprintf("incomplete after %d bytes were streamed: message aborted (connection closed with status 1011) by --incomplete=%s", m.size, cfg.Incomplete)
				w.r.m.incomplete.WithLabelValues("aborted").Inc()
				if m.w != nil {
					m.w.Abort("tapline: incomplete message aborted")
				}
				m.w = nil
				w.sink = nil
				w.sum.Reconnects++
				for _, s := range m.parts {
					w.r.acks.ack(s)
				}
			}
			w.ackOrFinishSkipped(e)
			return
		}
	}
	if err := w.r.pacer.WaitBytes(ctx, len(e.data)); err != nil {
		return
	}
	if err := w.writeChunk(ctx, e); err != nil {
		if isPermanent(err) {
			w.undeliverableCur(e, err)
			return
		}
		w.giveUp(ctx, err)
		return
	}
}

// markUndeliverable stops replaying a connection the target can never
// take: its messages are acknowledged without sending, each counted in
// tapline_replay_undeliverable_messages_total, and one result says why.
func (w *worker) markUndeliverable(reason string) {
	w.filtered, w.undeliverable = reason, true
	w.r.log.Warn("connection cannot be delivered to the test system; its messages are acknowledged without sending", "conn", w.id, "reason", reason)
	w.emitResult(Result{Kind: "message", Conn: w.id, VNI: w.vni, shard: w.shard, Result: "skipped",
		Reason: "not deliverable: " + reason, Target: w.target()})
}

// undeliverableCur gives up the current message after a permanent
// delivery error (a message of a kind the target cannot take), and with
// it the connection's later messages.
func (w *worker) undeliverableCur(e *entry, err error) {
	m := w.cur
	w.cur = nil
	if m.w != nil {
		m.w.Abort("tapline: message cannot be delivered")
		m.w = nil
		w.sink = nil
	}
	w.r.acks.ackAll(m.parts)
	w.dropAhead(m)
	w.r.ack(e)
	if e.chunk.Last {
		// Otherwise the last chunk is counted when it arrives (filtered).
		w.r.m.undeliver.Inc()
	}
	w.r.m.messages.WithLabelValues("skipped").Inc()
	w.sum.Skipped++
	w.markUndeliverable(err.Error())
}

// writeChunk writes e's payload as the next part of the current message,
// reconnecting and rewriting as needed.
func (w *worker) writeChunk(ctx context.Context, e *entry) error {
	m := w.cur
	c := &e.chunk
	if c.Last && !w.intend(ctx, c.Seq, e.streamSeq) {
		return ctx.Err()
	}
	for {
		if err := w.ensure(ctx); err != nil {
			return err
		}
		var err error
		if c.Last {
			if ctx.Err() != nil {
				return ctx.Err() // stopping: not begun, so not in doubt
			}
			// From here the test system may receive the message whole.
			w.written = max(w.written, c.Seq)
			w.writtenStream = max(w.writtenStream, e.streamSeq)
		}
		if c.Index == 0 && c.Last && !m.marked {
			// A whole message in one chunk: one frame.
			err = w.sink.WriteMessage(ctx, m.first.Opcode, e.data)
		} else {
			if m.w == nil {
				m.w, err = w.beginMsg(ctx, m)
			}
			if err == nil {
				_, err = m.w.Write(e.data)
			}
			if err == nil && c.Last {
				err = m.w.Close()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isPermanent(err) {
				return err
			}
			w.r.m.errors.WithLabelValues("write").Inc()
			w.dropSink()
			if err := w.failure(ctx, err); err != nil {
				return err
			}
			continue
		}
		m.parts = append(m.parts, e.streamSeq)
		m.size += int64(len(e.data))
		if c.Last {
			if hs, ok := w.sink.(*hubSink); ok {
				m.sent = hs.last
			}
			m.w = nil
			w.cur = nil
			if len(w.unconfirmed) == 0 {
				w.unconfSince = time.Now()
			}
			w.unconfirmed = append(w.unconfirmed, m)
			w.unconfBytes += m.size
			if !c.Complete {
				act := "sent"
				if m.marked {
					act = "marked"
				}
				w.r.m.incomplete.WithLabelValues(act).Inc()
				w.sum.Incomplete++
			}
		}
		return nil
	}
}

// sendControl replays a ping (as a ping the test system answers), a close
// (with its status code) or reports a pong as skipped.
func (w *worker) sendControl(ctx context.Context, e *entry) {
	c := &e.chunk
	m := w.cur
	if !c.Last {
		// Control messages are one chunk; wait for the last.
		m.parts = append(m.parts, e.streamSeq)
		return
	}
	w.cur = nil
	switch c.Opcode {
	case proto.OpPong:
		w.sum.Skipped++
		w.emit(w.r.msgResult(w, e, "skipped", "pong: the WebSocket library answers pings itself", 0), append(m.parts, e.streamSeq)...)
		return
	case proto.OpPing:
		// A ping is confirmed by its pong: everything before it is too.
		if err := w.confirm(ctx); err != nil {
			w.giveUp(ctx, err)
			w.r.ack(e)
			return
		}
		w.sum.Sent++
		w.r.m.messages.WithLabelValues("sent").Inc()
		w.emit(w.r.msgResult(w, e, "sent", "ping sent (payload chosen by the WebSocket library)", 0), append(m.parts, e.streamSeq)...)
		return
	case proto.OpClose:
		if err := w.confirm(ctx); err != nil {
			w.giveUp(ctx, err)
			w.r.ack(e)
			return
		}
		code, reason := c.CloseCode, ""
		if len(e.data) > 2 {
			reason = string(e.data[2:])
		}
		if w.sink != nil {
			if err := w.sink.CloseMsg(code, reason); err != nil {
				w.r.log.Debug("close handshake", "conn", w.id, "err", err)
			}
			if w.hub == nil {
				w.sink = nil
			}
		}
		w.sum.Sent++
		w.r.m.messages.WithLabelValues("sent").Inc()
		w.emit(w.r.msgResult(w, e, "sent", "", 0), append(m.parts, e.streamSeq)...)
	}
}

// confirm makes the test system confirm it read every message written, then
// acknowledges them and publishes their results.
func (w *worker) confirm(ctx context.Context) error {
	w.releaseWrites() // a ping in flight may wait behind held frames
	w.waitPing(ctx)
	if w.hub != nil && len(w.unconfirmed) > 0 {
		n := len(w.unconfirmed)
		_ = sleepCtx(ctx, w.r.cfg.confirmDelay)
		w.settle(ctx, n, w.hub.confirmSent(ctx, w.r.cfg.WriteTimeout, w.hubSents(n)))
		return ctx.Err()
	}
	for len(w.unconfirmed) > 0 {
		if w.failed {
			return nil
		}
		err := w.ensure(ctx)
		if err == nil {
			_ = sleepCtx(ctx, w.r.cfg.confirmDelay)
			err = w.sink.Confirm(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				w.dropSink()
				if ferr := w.failure(ctx, err); ferr != nil {
					err = ferr
				} else {
					continue
				}
			}
		}
		if err != nil {
			w.giveUp(ctx, err)
			return err
		}
		w.settle(ctx, len(w.unconfirmed), nil)
	}
	return nil
}

// pingResult is the outcome of an asynchronous confirmation.
type pingResult struct {
	s   sink
	n   int // messages written before the ping
	err error
	ok  []bool // listen mode: which of them were confirmed
}

// startConfirm asks the test system to confirm what was written without
// waiting for the answer, so writing goes on meanwhile; the answer is
// handled by handlePing. Without a connection it confirms synchronously
// (reconnecting and rewriting).
func (w *worker) startConfirm(ctx context.Context) error {
	if w.pinging || len(w.unconfirmed) == 0 || w.failed {
		return nil
	}
	if w.sink == nil {
		return w.confirm(ctx)
	}
	s, n := w.sink, len(w.unconfirmed)
	w.pinging = true
	if w.hub != nil {
		sents := w.hubSents(n)
		go func() {
			_ = sleepCtx(ctx, w.r.cfg.confirmDelay)
			w.pingDone <- pingResult{n: n, ok: w.hub.confirmSent(ctx, w.r.cfg.WriteTimeout, sents)}
		}()
		return nil
	}
	go func() {
		_ = sleepCtx(ctx, w.r.cfg.confirmDelay)
		err := s.Confirm(ctx)
		w.pingDone <- pingResult{s: s, n: n, err: err}
	}()
	return nil
}

// handlePing applies an asynchronous confirmation's outcome.
func (w *worker) handlePing(ctx context.Context, res pingResult) {
	w.pinging = false
	if res.ok != nil {
		if ctx.Err() == nil {
			w.settle(ctx, min(res.n, len(w.unconfirmed)), res.ok)
		}
		return
	}
	if res.s != w.sink || ctx.Err() != nil {
		return // the connection was replaced: its messages were rewritten
	}
	if res.err != nil {
		w.r.m.errors.WithLabelValues("write").Inc()
		w.dropSink() // the next write or confirmation reconnects and rewrites
		return
	}
	w.settle(ctx, min(res.n, len(w.unconfirmed)), nil)
}

// waitPing waits for an asynchronous confirmation in flight.
func (w *worker) waitPing(ctx context.Context) {
	if !w.pinging {
		return
	}
	select {
	case res := <-w.pingDone:
		w.handlePing(ctx, res)
	case <-ctx.Done():
	}
}

// pollPing handles an asynchronous confirmation that has completed.
func (w *worker) pollPing(ctx context.Context) {
	if !w.pinging {
		return
	}
	select {
	case res := <-w.pingDone:
		w.releaseWrites() // settling publishes results, which may wait
		w.handlePing(ctx, res)
	default:
	}
}

// settle reports the first n unconfirmed messages — sent, or in doubt
// where ok (nil: all confirmed) says the test connections they were
// written to closed unconfirmed —, and hands their results and entries to
// the settler, which stores the results, records the messages in the
// delivery ledger and then acknowledges them: a replay crashing in
// between finds them recorded and does not send them again, and a result
// not stored leaves its message unacknowledged. The worker does not wait.
func (w *worker) settle(_ context.Context, n int, ok []bool) {
	now := time.Now()
	var it settleItem
	for i, m := range w.unconfirmed[:n] {
		it.acks = append(it.acks, m.parts...)
		if ok != nil && i < len(ok) && !ok[i] {
			w.unconfBytes -= m.size
			w.sum.InDoubt++
			w.r.m.messages.WithLabelValues(ResultInDoubt).Inc()
			it.results = append(it.results, w.r.outResult(w, m, ResultInDoubt, reasonInDoubtConn, 0))
			w.mark.add(m.first.Seq, m.lastStream())
			continue
		}
		result, reason := "sent", ""
		if !m.last.Complete {
			reason = fmt.Sprintf("incomplete (%d bytes missing), sent by --incomplete=%s", m.last.Missing, w.r.cfg.Incomplete)
		}
		w.sum.Sent++
		w.sum.SentBytes += m.size
		w.unconfBytes -= m.size
		w.r.m.messages.WithLabelValues(result).Inc()
		w.r.m.bytes.WithLabelValues(result).Add(float64(m.size))
		lag := 0.0
		if m.last.LastNs > 0 {
			lag = now.Sub(time.Unix(0, m.last.LastNs)).Seconds()
			w.r.m.lag.Observe(lag)
		}
		if !m.arrived.IsZero() {
			w.r.m.latency.Observe(now.Sub(m.arrived).Seconds())
		}
		it.results = append(it.results, w.r.outResult(w, m, result, reason, lag))
		w.mark.add(m.first.Seq, m.lastStream())
	}
	w.st.add(it)
	rest := copy(w.unconfirmed, w.unconfirmed[n:])
	clear(w.unconfirmed[rest:])
	w.unconfirmed = w.unconfirmed[:rest]
	if rest == 0 {
		w.unconfBytes = 0
	} else {
		w.unconfSince = now
	}
}

// abortCur gives up the message in progress (its last chunk never came).
// A partly written message is never finished at the test system (that
// would deliver its first part as a complete message): the connection is
// closed with status 1011, and the result says complete false.
func (w *worker) abortCur(ctx context.Context, reason string) {
	m := w.cur
	if m.w != nil {
		// Confirm the messages before this one: closing the connection
		// must not lose them.
		_ = w.confirm(ctx)
	}
	w.cur = nil
	if m.w != nil {
		m.w.Abort("tapline: " + reason)
		m.w = nil
		w.sink = nil
		w.sum.Reconnects++
		w.r.m.incomplete.WithLabelValues("aborted").Inc()
		reason += fmt.Sprintf(": message aborted after %d bytes were streamed (connection closed with status 1011)", m.size)
	}
	w.dropAhead(m)
	w.mark.add(m.first.Seq, m.lastStream())
	w.sum.Skipped++
	w.sum.Incomplete++
	w.r.m.messages.WithLabelValues("skipped").Inc()
	m.last.Complete = false // it cannot be finished exactly
	w.emit(w.r.outResult(w, m, "skipped", reason, 0), m.parts...)
}

// stopStreaming gives up the message in progress when it cannot be
// finished exactly: the messages before it are confirmed, a partly written
// message is aborted at the test system (status 1011, never finished), its
// chunks are acknowledged and the rest of it is skipped; its result is
// published once, at its last chunk or when the connection ends. It
// returns false when replay is stopping (nothing was changed).
func (w *worker) stopStreaming(ctx context.Context, m *outMsg, reason string) bool {
	if m.w != nil {
		// Closing the connection must not lose the messages before it.
		if err := w.confirm(ctx); err != nil && ctx.Err() != nil {
			return false
		}
	}
	m.skip, m.reason = true, reason
	w.r.m.incomplete.WithLabelValues("aborted").Inc()
	if m.w != nil {
		m.w.Abort("tapline: " + reason)
		m.w = nil
		w.sink = nil
		w.sum.Reconnects++
	}
	w.r.acks.ackAll(m.parts)
	return true
}

// abortForRestart stops writing the message in progress when replay shuts
// down: the partial message is aborted at the test system (status 1011),
// and its chunks stay unacknowledged and unreported, so the next replay on
// the durable sends it whole.
func (w *worker) abortForRestart() {
	m := w.cur
	w.cur = nil
	if m.w != nil {
		m.w.Abort("tapline: replay stopping inside the message; it is sent again")
		m.w = nil
		w.sink = nil
	}
}

// ackOrFinishSkipped acknowledges a chunk of a message being skipped; its
// last chunk reports the message, and is acknowledged once that result is
// stored.
func (w *worker) ackOrFinishSkipped(e *entry) {
	if !e.chunk.Last {
		w.r.ack(e)
		return
	}
	m := w.cur
	w.cur = nil
	w.sum.Skipped++
	w.sum.Incomplete++
	w.r.m.messages.WithLabelValues("skipped").Inc()
	w.r.m.bytes.WithLabelValues("skipped").Add(float64(e.chunk.Size))
	w.emit(w.r.msgResult(w, e, "skipped", m.reason, 0), e.streamSeq)
}

// giveUp marks the connection failed: the test system could not be reached
// for --give-up. Everything held is acknowledged and reported failed, and
// so is every later message of the connection.
func (w *worker) giveUp(ctx context.Context, err error) {
	if ctx.Err() != nil || w.failed {
		return
	}
	w.failed = true
	w.r.m.errors.WithLabelValues("giveup").Inc()
	w.r.m.connsTotal.WithLabelValues("failed").Inc()
	w.r.log.Error("connection could not be recreated; its messages are reported failed", "conn", w.id, "err", err)
	reason := err.Error()
	for _, m := range w.unconfirmed {
		w.mark.add(m.first.Seq, m.lastStream())
		w.sum.Failed++
		w.r.m.messages.WithLabelValues("failed").Inc()
		w.emit(w.r.outResult(w, m, "failed", reason, 0), m.parts...)
	}
	w.unconfirmed = nil
	if m := w.cur; m != nil {
		w.r.acks.ackAll(m.parts)
		m.skip, m.reason = true, reason
	}
	w.emitResult(Result{Kind: "message", Conn: w.id, VNI: w.vni, shard: w.shard, Result: "failed", Reason: "connection could not be recreated: " + reason, Target: w.target()})
}

func (w *worker) target() string {
	if w.sink != nil {
		return w.sink.Name()
	}
	if w.hub != nil {
		return "listen " + w.hub.spec.Addr
	}
	if w.protocol == "tcp" {
		return "tcp://" + w.r.cfg.tcpTarget
	}
	if w.r.cfg.wsTarget != nil {
		return w.r.cfg.wsTarget.String()
	}
	return ""
}

// expectChunk records a production response for comparison.
func (w *worker) expectChunk(e *entry) {
	c := &e.chunk
	switch c.Opcode {
	case proto.OpTCP:
		if w.tcpExp == nil {
			w.tcpExp = compare.NewBuilder(0, proto.OpTCP, w.r.cfg.CompareMax)
		}
		w.tcpExp.Write(e.data)
		if !c.Complete {
			w.tcpExp.Incomplete()
		}
		return
	case proto.OpText, proto.OpBinary:
	default:
		return // control frames are answered by the library, not compared
	}
	if c.Index == 0 {
		w.expect = compare.NewBuilder(c.Seq, c.Opcode, w.r.cfg.CompareMax)
	}
	if w.expect == nil {
		return
	}
	w.expect.Write(e.data)
	if !c.Complete {
		w.expect.Incomplete()
	}
	if c.Last {
		w.cmp.Expect(w.expect.Done())
		w.expect = nil
	}
}

func (w *worker) reportComparison(o compare.Outcome) {
	result := "mismatch"
	switch {
	case o.Skipped:
		result = "skipped"
	case o.Match:
		result = "match"
	}
	w.r.m.messages.WithLabelValues(result).Inc()
	if result == "mismatch" {
		w.r.m.mismatches.Inc()
	}
	r := Result{Kind: "message", Conn: w.id, VNI: w.vni, shard: w.shard, Dir: proto.ServerToClient, Seq: o.Seq,
		Result: result, Reason: o.Reason, Index: o.Index, Target: w.target()}
	if o.Expected != nil {
		r.Expected = &Digest{Opcode: o.Expected.Opcode, Size: o.Expected.Size, SHA256: o.Expected.Digest()}
		r.Opcode, r.Size = o.Expected.Opcode, o.Expected.Size
	}
	if o.Got != nil {
		r.Got = &Digest{Opcode: o.Got.Opcode, Size: o.Got.Size, SHA256: o.Got.Digest()}
	}
	w.emitResult(r)
}

// finish ends the connection: the test connection is closed gracefully,
// the comparison is completed and the summary published.
func (w *worker) finish(end string) {
	if end == "shutdown" && !w.r.cfg.noNakOnStop {
		w.confirmOnStop()
	}
	if w.cur != nil && !w.cur.skip {
		// The connection (or replay) ended inside a message: never
		// complete it.
		if end == "shutdown" {
			w.abortForRestart()
		} else {
			w.abortCur(context.Background(), "connection ended inside the message")
		}
	} else if m := w.cur; m != nil && end != "shutdown" {
		// A message being skipped whose last chunk never came: its
		// result would otherwise never be published.
		w.cur = nil
		w.dropAhead(m)
		result := "skipped"
		if w.failed {
			result = "failed"
		}
		m.last.Complete = false
		w.sum.Skipped++
		w.r.m.messages.WithLabelValues(result).Inc()
		w.emit(w.r.outResult(w, m, result, m.reason+"; the connection ended inside the message", 0))
	}
	if end != "shutdown" {
		w.flushEarly()
	}
	if len(w.unconfirmed) > 0 && end != "shutdown" {
		_ = w.confirm(context.Background())
	}
	// Last, once every result (the summary too) is stored: what the
	// delivery ledger says when the connection stops being replayed here.
	defer func() {
		settled := w.st.close()
		if end != "shutdown" || !w.r.cfg.noNakOnStop {
			w.settleMark()
		}
		if settled && end != "shutdown" {
			w.r.acks.ackAll([]uint64{w.openSeq, w.closeSeq})
			w.openSeq, w.closeSeq = 0, 0
		}
	}()
	if w.sink != nil {
		if end == "shutdown" {
			w.sink.Kill()
		} else {
			w.sink.End(w.r.cfg.CloseWait)
		}
		if ts, ok := w.sink.(*tcpSink); ok && w.cmp != nil {
			if w.tcpExp != nil {
				w.cmp.Expect(w.tcpExp.Done())
			}
			if got := ts.responses(); got != nil && (got.Size > 0 || w.tcpExp != nil) {
				w.cmp.Got(*got)
			}
		}
		w.sink = nil
	}
	if w.slot {
		w.r.releaseSlot()
		w.slot = false
	}
	if end == "shutdown" {
		return // not finished: the rest is replayed after a restart
	}
	if w.r.opens != nil && end == "close" {
		// An idle connection may go on later: its record stays (bounded
		// by the bucket's TTL).
		if err := w.r.opens.forget(w.id); err != nil {
			w.r.log.Warn("open event ledger", "conn", w.id, "err", err)
		}
	}
	w.sum.End = end
	if w.filtered != "" {
		w.sum.End = "filtered"
		w.r.m.connsTotal.WithLabelValues("filtered").Inc()
		w.emitResult(Result{Kind: "summary", Conn: w.id, VNI: w.vni, shard: w.shard, Result: "skipped", Reason: w.filtered, Summary: &w.sum})
		return
	}
	if w.failed {
		w.sum.End = "failed"
	}
	result := "sent"
	if w.cmp != nil {
		s := w.cmp.Finish()
		w.sum.Comparison = s
		result = "match"
		if s.Mismatched > 0 {
			result = "mismatch"
		}
	}
	if w.failed || w.sum.Failed > 0 {
		result = "failed"
	}
	if !w.failed {
		w.r.m.connsTotal.WithLabelValues(end).Inc()
	}
	reason := ""
	if result == "sent" {
		reason = w.notCompared
	}
	if w.credsNote != "" {
		reason = strings.TrimPrefix(reason+"; "+w.credsNote, "; ")
	}
	w.emitResult(Result{Kind: "summary", Conn: w.id, VNI: w.vni, shard: w.shard, Result: result, Reason: reason, Summary: &w.sum, Target: w.target()})
}

// confirmOnStop confirms, when replay stops, what the test system has
// read, so the next replay need not report it in doubt.
func (w *worker) confirmOnStop() {
	w.releaseWrites()
	if w.pinging {
		<-w.pingDone // its context has ended: it returns at once
		w.pinging = false
	}
	if len(w.unconfirmed) == 0 || (w.sink == nil && w.hub == nil) || w.failed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if w.hub != nil {
		n := len(w.unconfirmed)
		w.settle(ctx, n, w.hub.confirmSent(ctx, 3*time.Second, w.hubSents(n)))
		return
	}
	if err := w.sink.Confirm(ctx); err == nil {
		w.settle(ctx, len(w.unconfirmed), nil)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
