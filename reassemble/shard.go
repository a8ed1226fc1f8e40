package reassemble

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/reassemble/tcp"
)

// priorityGroup is the one priority group of every shard consumer: the
// server pins it to one client at a time.
const priorityGroup = "owner"

// batch is one consumed frame batch. It is acknowledged when nothing holds
// it any more: it has been decoded, the entries it produced are stored,
// and no open (replayable) connection has frames in it.
type batch struct {
	reply   string // the delivery's ack subject (the message itself is not kept)
	seq     uint64
	refs    int
	holders int // open connections holding it (it counts once in worker.held)
	acked   bool
	touched time.Time // last ack or in-progress sent
	// done makes the batch a token: no delivery, done is called when
	// its last reference is released (see worker.retire).
	done func()
}

// gathered is a delivered batch not processed yet: a redelivery, or any
// batch received while recovering.
type gathered struct {
	m       jetstream.Msg
	seq     uint64
	touched time.Time // delivery or last in-progress ack
}

// worker consumes and reassembles one shard.
type worker struct {
	e        *engine
	shard    int
	consName string
	sid      string
	tr       *tcp.Tracker
	pub      *publisher
	cur      *batch

	pending      []*batch          // not yet acknowledged, in stream order
	bySeq        map[uint64]*batch // the same by stream sequence
	redelivered  []*gathered       // batches waiting to be processed sorted by stream sequence
	gatheredSeq  map[uint64]int    // stream sequence -> index in redelivered
	cons         jetstream.Consumer
	recovering   bool // gathering batches until every pending delivery has reached this instance
	recoverUntil time.Time
	dueBy        time.Time    // every delivery held for another owner is due for redelivery by then
	paused       bool         // this recovery stopped taking new batches once (see pauseFetching)
	fetchPause   atomic.Int64 // Unix ns before which the fetch loop requests no batch
	lastCons     uint64       // consumer (delivery) sequence of the last delivery handled
	deliveryJump bool         // a delivery did not follow the last one handled since the last batch processed
	held         int          // (connection, batch) holds
	holdQ        []*conn      // connections in the order they first held a batch

	streamBytes [2]int64
	lastStats   tcp.Stats
	lastPktWall time.Time // when the last batch was processed
	lastPktNs   int64     // the tracker's clock (capture time) then
	// caughtUpAt is the wall time (Unix ns) at which the latest fetch that
	// found nothing more pending was sent: every batch published before it
	// has been delivered. Set by the fetch goroutine.
	caughtUpAt atomic.Int64
	owned      bool
	lastMsg    time.Time
	pubErr     error

	retiring []retiring             // connections closed in the batch being processed (see retire)
	unheld   []*conn                // open connections not holding, with frames in the batch being processed
	done     map[string]*doneRecord // records this shard wrote or read, by key, until pruned

	tlsConns  map[*conn]struct{} // TLS connections that may hold ciphertext waiting for keys, or a close waiting for them
	lingerSet map[*conn]struct{} // the closes waiting for keys
}

func newWorker(e *engine, shard int) *worker {
	w := &worker{e: e, shard: shard, consName: e.cfg.Consumer + "-" + strconv.Itoa(shard), sid: strconv.Itoa(shard), bySeq: map[uint64]*batch{}, gatheredSeq: map[uint64]int{}}
	w.tr = tcp.New(tcp.Config{
		MaxConnections: e.cfg.MaxConnections,
		MaxMemory:      e.cfg.shardMemory(),
		ConnCost:       ConnCost,
		MaxBuffered:    e.cfg.MaxBufferedBytes,
		ReorderWindow:  e.cfg.ReorderWindow,
		IdleTimeout:    e.cfg.IdleTimeout,
		MaxSeqJump:     e.cfg.MaxSeqJump,
		MaxFlowRate:    e.cfg.MaxFlowRate,
	}, w.openConn)
	w.pub = &publisher{
		js:       e.js,
		log:      e.log.With("shard", shard),
		max:      e.cfg.MaxInflight,
		maxBytes: int(e.cfg.MaxInflightBytes),
		maxConn:  e.cfg.MaxInflightConn,
		release:  w.release,
		onStored: e.m.published.Inc,
		onRetry:  e.m.publishRetries.Inc,
	}
	if e.nc != nil {
		w.pub.connected = e.nc.IsConnected
	}
	return w
}

// preferDelay is how long this instance waits before asking for a shard:
// a rendezvous hash of instance and shard spread over TakeoverSpread, so
// each instance asks first for different shards and the server pins those
// to it. Every instance asks for every shard eventually; which one owns a
// shard is decided by the server's pinning only.
func (w *worker) preferDelay() time.Duration {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", w.e.cfg.InstanceID, w.shard)
	return time.Duration(float64(h.Sum64()>>11) / float64(1<<53) * float64(w.e.cfg.TakeoverSpread))
}

func (w *worker) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        w.consName,
		Description:    "tapline reassemble, shard " + w.sid,
		FilterSubject:  proto.FramesShardFilter(w.shard),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        w.e.cfg.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  w.e.cfg.MaxHeldBatches + 2*pullBatches + 1024,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{priorityGroup},
		PinnedTTL:      w.e.cfg.PinnedTTL,
	}
}

// pullBatches is how many batches the client buffers ahead.
const pullBatches = 64

// run consumes the shard until ctx ends, then hands it over.
func (w *worker) run(ctx context.Context) {
	log := w.e.log.With("shard", w.shard)
	select {
	case <-time.After(w.preferDelay()):
	case <-ctx.Done():
		return
	}
	var cons jetstream.Consumer
	// Creating a consumer of an R3 stream waits for its own leader
	// election: the timeout grows with the cluster's latency.
	timeout := proto.ProvisionTimeout(w.e.cfg.Common.Streams.Replicas)
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		var err error
		cons, err = w.e.js.CreateOrUpdateConsumer(cctx, proto.FramesStream, w.consumerConfig())
		cancel()
		if err == nil {
			w.e.consumers.Add(1)
			break
		}
		if errors.Is(err, context.DeadlineExceeded) {
			timeout = min(2*timeout, proto.MaxProvisionTimeout)
		}
		log.Warn("create consumer; retrying", "consumer", w.consName, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
	}
	// Fetch requests rather than a continuous pull: when the instance
	// stops, the last request completes (all its messages received, or
	// expired) before the shard is handed over, so no batch is left in
	// flight to an inbox nobody reads.
	// Short requests: a hand-over waits for the last one to end.
	expiry := min(max(w.e.cfg.PinnedTTL/3, time.Second), 5*time.Second)
	msgs := make(chan jetstream.Msg, pullBatches)
	go func() {
		defer close(msgs)
		for ctx.Err() == nil {
			if d := time.Until(time.Unix(0, w.fetchPause.Load())); d > 0 {
				select {
				case <-time.After(min(d, 100*time.Millisecond)):
				case <-ctx.Done():
				}
				continue
			}
			if d := w.e.cfg.fetchDelay; d > 0 {
				time.Sleep(d) // tests: a slow client
			}
			sent := time.Now()
			mb, err := cons.Fetch(pullBatches, jetstream.FetchMaxWait(expiry), jetstream.FetchPriorityGroup(priorityGroup))
			if err != nil {
				log.Debug("fetch", "err", err)
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
				}
				continue
			}
			n := 0
			for m := range mb.Messages() {
				msgs <- m
				n++
			}
			err = mb.Error()
			if err != nil && !errors.Is(err, nats.ErrTimeout) {
				log.Debug("fetch", "err", err)
			} else if n < pullBatches {
				w.caughtUpAt.Store(sent.UnixNano())
			}
			if n < pullBatches {
				msgs <- nil // caught up: nothing more to redeliver
			}
		}
	}()
	w.pub.retryCtx = ctx
	w.cons = cons
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	infoEvery := 0
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return
			}
			if m == nil {
				w.flushRedelivered()
				continue
			}
			w.handle(m)
		case <-tick.C:
			w.tick()
			w.checkRecovery(ctx)
			if infoEvery++; infoEvery%5 == 0 {
				w.consumerInfo(ctx, cons)
			}
		case <-ctx.Done():
			if w.e.crashOnStop {
				return // tests: die without a hand-over
			}
			w.handOver(msgs)
			return
		}
	}
}

// handle takes one delivered batch. Redelivered batches (after a
// hand-over or a crash of the previous owner) come before new ones but not
// in stream order: they are gathered and processed sorted by stream
// sequence when the first new batch arrives or nothing more is pending.
// A redelivery of a batch this instance still holds only refreshes the
// handle used to acknowledge it.
//
// Every delivery of the consumer has the next consumer sequence. When the
// sequence of a delivery does not follow the last one handled — the first
// delivery to this instance, a delivery lost on its way here (a fetch
// cut by a NATS server restart or a client-side expiry), deliveries to
// another owner in between — the server may hold unacknowledged batches
// that this instance has not got and that it will redeliver only after
// their ack wait, later than newer batches. Processing newer batches
// first would move the connections in them past those batches' bytes and
// report them lost. So the instance then recovers: it gathers batches
// until every delivery the server has pending is its own, and processes
// them in stream order.
func (w *worker) handle(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		w.e.log.Warn("batch without metadata", "shard", w.shard, "err", err)
		_ = m.Term()
		return
	}
	jump := md.Sequence.Consumer != w.lastCons+1
	w.deliveryJump = w.deliveryJump || jump
	prev := w.lastCons
	w.lastCons = md.Sequence.Consumer
	if md.NumDelivered > 1 {
		if b := w.bySeq[md.Sequence.Stream]; b != nil {
			b.reply, b.touched = m.Reply(), time.Now()
			if jump && !w.recovering {
				w.startRecovery(md, prev)
			}
			return
		}
	}
	if jump && !w.recovering {
		w.gather(m, md)
		w.startRecovery(md, prev)
		if !w.recovering {
			w.flushRedelivered()
		}
		return
	}
	if w.recovering || md.NumDelivered > 1 {
		w.gather(m, md)
		if len(w.redelivered) >= w.e.cfg.MaxHeldBatches+pullBatches {
			if w.recovering {
				w.pauseFetching()
			} else {
				w.flushRedelivered()
			}
		}
		return
	}
	w.flushRedelivered()
	w.process(m, md)
}

// gather keeps a batch to process later in stream order; a second delivery
// of a batch already gathered replaces the first (its ack subject is the
// current one).
func (w *worker) gather(m jetstream.Msg, md *jetstream.MsgMetadata) {
	g := &gathered{m: m, seq: md.Sequence.Stream, touched: time.Now()}
	if i, ok := w.gatheredSeq[g.seq]; ok {
		w.redelivered[i] = g
		return
	}
	w.gatheredSeq[g.seq] = len(w.redelivered)
	w.redelivered = append(w.redelivered, g)
	if w.recovering && md.NumDelivered > 1 {
		// Redeliveries are still coming in: a slow client (a busy
		// machine, thousands of held batches) receives them later than
		// the ack wait plus a few seconds. Ending the recovery now would
		// process the batches gathered so far and leave the connections
		// of the rest with holes, reported as mirror loss, and rebuilt
		// with other message numbers than their first owner gave them.
		// The recovery ends only once no new redelivery came for
		// recoveryQuiet (each batch is new at most once, so this ends).
		w.recoverUntil = later(w.recoverUntil, time.Now().Add(recoveryQuiet))
	}
}

// recoveryQuiet is how long a recovery past its deadline still waits for
// the next redelivered batch.
const recoveryQuiet = 5 * time.Second

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// startRecovery is called when a delivery's consumer sequence does not
// follow the last one handled (prev; 0 before the first). If the server
// has unacknowledged deliveries this instance does not have — a previous
// owner died without handing over, or deliveries were lost on their way
// here — which it will redeliver only after their ack wait, batches are
// gathered until those redeliveries have arrived (every pending delivery
// is then this instance's) or the ack wait has passed, and everything is
// processed in stream order: the open connections are rebuilt from their
// first packets and none moves past bytes still to come.
func (w *worker) startRecovery(md *jetstream.MsgMetadata, prev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if w.haveAll(ctx) {
		return
	}
	now := time.Now()
	w.recovering, w.paused = true, false
	w.dueBy = now.Add(w.e.cfg.AckWait + time.Second)
	w.recoverUntil = now.Add(w.e.cfg.AckWait + 5*time.Second)
	w.e.log.Info("deliveries pending that this instance has not received; gathering batches until they are redelivered",
		"shard", w.shard, "last_delivery", prev, "delivery", md.Sequence.Consumer, "stream_seq", md.Sequence.Stream, "delivered", md.NumDelivered)
}

// haveAll reports whether every delivery the server has pending for the
// consumer is one this instance has received and not acknowledged. False
// when it cannot tell (the server did not answer, or deliveries are still
// on their way).
func (w *worker) haveAll(ctx context.Context) bool {
	info, err := w.cons.Info(ctx)
	if err != nil {
		return false
	}
	if info.Delivered.Consumer > w.lastCons {
		return false // deliveries on their way here: decide later
	}
	mine := len(w.redelivered)
	for _, b := range w.pending {
		if !b.acked {
			mine++
		}
	}
	return info.NumAckPending <= mine
}

// checkRecovery ends the recovery when every pending delivery is this
// instance's or its deadline passed.
func (w *worker) checkRecovery(ctx context.Context) {
	if !w.recovering {
		return
	}
	if time.Now().After(w.recoverUntil) {
		w.endRecovery("deadline")
		return
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if w.haveAll(ictx) {
		w.endRecovery("redelivered")
	}
}

// pauseFetching is called when a recovery has gathered as many batches
// as the shard may hold and the deliveries it waits for are still not
// back. Ending the recovery then would process the new batches before the
// missing ones and move their connections past those bytes (issue 17: a
// large message of a connection held over a restart, new batches
// arriving fast). Instead the instance takes no new batch until every
// delivery held for the previous owner is due for redelivery (the ack wait
// after this recovery began); the server delivers redeliveries before new
// batches, and it never has more than the consumer's MaxAckPending
// unacknowledged, which bounds what is gathered.
func (w *worker) pauseFetching() {
	if w.paused {
		return
	}
	w.paused = true
	w.fetchPause.Store(w.dueBy.UnixNano())
	w.recoverUntil = w.dueBy.Add(w.e.cfg.AckWait + 5*time.Second)
	w.e.log.Info("recovery: batch buffer full; taking no new batch until the missing deliveries are due",
		"shard", w.shard, "batches", len(w.redelivered), "until", w.dueBy)
}

func (w *worker) endRecovery(why string) {
	w.recovering = false
	w.fetchPause.Store(0)
	w.e.log.Info("recovery done", "shard", w.shard, "why", why, "batches", len(w.redelivered))
	w.flushRedelivered()
}

// flushRedelivered processes the gathered redelivered batches in stream
// order.
func (w *worker) flushRedelivered() {
	if len(w.redelivered) == 0 || w.recovering {
		return
	}
	rs := w.redelivered
	w.redelivered = nil
	clear(w.gatheredSeq)
	slices.SortFunc(rs, func(a, b *gathered) int { return cmp.Compare(a.seq, b.seq) })
	for _, g := range rs {
		md, err := g.m.Metadata()
		if err != nil {
			continue
		}
		if b := w.bySeq[g.seq]; b != nil {
			b.reply, b.touched = g.m.Reply(), time.Now() // already processed and held
			continue
		}
		w.process(g.m, md)
	}
}

func seqOf(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

// process decodes one batch and feeds its frames to the tracker.
func (w *worker) process(m jetstream.Msg, md *jetstream.MsgMetadata) {
	now := time.Now()
	if !w.owned || now.Sub(w.lastMsg) > w.e.cfg.PinnedTTL {
		first := !w.owned
		w.owned = true
		w.e.m.takeovers.Inc()
		w.e.log.Info("receiving shard", "instance", w.e.cfg.InstanceID, "shard", w.shard, "stream_seq", md.Sequence.Stream, "delivered", md.NumDelivered)
		w.e.ownershipEvent(w.shard, "receiving")
		if first || w.deliveryJump {
			// Another instance may have had the shard in between: read
			// the records it left (not when the shard was only quiet).
			w.loadDone()
		}
	}
	w.deliveryJump = false
	w.lastMsg = now
	w.lastPktWall = now
	b := &batch{reply: m.Reply(), seq: md.Sequence.Stream, refs: 1, touched: now}
	w.pending = append(w.pending, b)
	w.bySeq[b.seq] = b
	w.cur = b
	w.e.m.batches.Inc()
	r := framebatch.NewReader(m.Data())
	var f framebatch.Frame
	n := 0
	for {
		if err := r.Next(&f); err != nil {
			if !errors.Is(err, io.EOF) {
				w.e.m.batchErrors.Inc()
				w.e.log.Warn("bad frame batch", "shard", w.shard, "stream_seq", b.seq, "err", err)
			}
			break
		}
		w.tr.SetPos(framePos(b.seq, n))
		n++
		c := w.tr.Packet(&f)
		if c == nil {
			continue
		}
		if cc, ok := c.User.(*conn); ok && !cc.closed {
			if cc.replayable {
				w.hold(cc, b)
			} else {
				w.noteUnheld(cc)
			}
		}
	}
	w.e.m.frames.Add(float64(n))
	w.lastPktNs = w.tr.Now()
	w.endBatch(b)
	w.recordUnheld(b)
	w.cur = nil
	w.release(b)
	w.pub.poll()
}

// publish queues an entry produced by the current batch (or by a timer).
func (w *worker) publish(m *nats.Msg) { w.publishFor(m, w.cur) }

// publishFor queues an entry that releases b once stored.
func (w *worker) publishFor(m *nats.Msg, b *batch) {
	if w.pubErr != nil {
		return
	}
	if err := w.pub.publish(m, b); err != nil {
		w.pubErr = err
		w.e.log.Error("shard stopped publishing; its batches are not acknowledged and will be redelivered", "shard", w.shard, "err", err)
	}
}

func (w *worker) hold(c *conn, b *batch) {
	if n := len(c.holds); n > 0 && c.holds[n-1] == b {
		return
	}
	c.holds = append(c.holds, b)
	b.refs++
	// The limit is on distinct batches kept unacknowledged (what the
	// consumer's MaxAckPending bounds), not on connection-batch pairs: a
	// batch shared by many open connections counts once.
	if b.holders++; b.holders == 1 {
		w.held++
	}
	if !c.queued {
		c.queued = true
		w.holdQ = append(w.holdQ, c)
	}
	for w.held > w.e.cfg.MaxHeldBatches && len(w.holdQ) > 0 {
		old := w.holdQ[0]
		w.holdQ[0] = nil
		w.holdQ = w.holdQ[1:]
		old.queued = false
		if old.closed || !old.replayable || len(old.holds) == 0 {
			continue
		}
		// The oldest connection stops holding: its batches are
		// acknowledged, and a failover continues it as a resumed
		// connection after what its records say was published.
		old.replayable = false
		w.noteUnheld(old) // its record goes with this batch, before its batches are acknowledged
		w.e.m.unreplayable.Inc()
		w.e.log.Warn("connection stops holding its frame batches (--max-held-batches): a crash of this instance from now on cannot rebuild it, only continue it as a resumed connection",
			"shard", w.shard, "conn", old.meta.Conn, "held_batches", w.held, "max_held_batches", w.e.cfg.MaxHeldBatches)
		// Its batches are released once its record (recordUnheld) is
		// stored: a successor must know what it published before they are
		// gone.
		old.released = append(old.released, w.dropHolds(old)...)
	}
}

func (w *worker) releaseHolds(c *conn) {
	for _, b := range w.dropHolds(c) {
		w.release(b)
	}
}

// dropHolds ends c's holds and returns the batches, whose references the
// caller releases.
func (w *worker) dropHolds(c *conn) []*batch {
	hs := c.holds
	c.holds = nil
	for _, b := range hs {
		if b.holders--; b.holders == 0 {
			w.held--
		}
	}
	return hs
}

// release drops one reference to b and acknowledges it at zero.
func (w *worker) release(b *batch) {
	b.refs--
	if b.refs == 0 && !b.acked {
		b.acked = true
		if b.done != nil {
			b.done()
			return
		}
		delete(w.bySeq, b.seq)
		_ = w.e.nc.Publish(b.reply, proto.AckBody)
	}
}

// tick runs every second: idle timeouts (capture time, advanced by the
// wall clock while no frames come), in-progress acks of held batches,
// gauges.
func (w *worker) tick() {
	w.tr.Expire(w.captureNow())
	w.pollTLS(false)
	w.pubTick()
}

// capLingering bounds what the closes waiting for keys hold: the tracker
// no longer charges them to --max-memory, so together they may hold at
// most a quarter of the shard's share; past it the oldest are finished
// now (what they still hold is given up as undecryptable).
func (w *worker) capLingering() {
	var ls []*conn
	var total int64
	for c := range w.lingerSet {
		ls = append(ls, c)
		total += c.Memory()
	}
	limit := w.e.cfg.shardMemory() / 4
	if total <= limit {
		return
	}
	slices.SortFunc(ls, func(a, b *conn) int { return cmp.Compare(a.linger.tsNs, b.linger.tsNs) })
	for _, c := range ls {
		if total <= limit {
			break
		}
		total -= c.Memory()
		a := c.linger
		c.finishClose(a.reason, a.tsNs, a.c2s, a.s2c)
		delete(w.tlsConns, c)
	}
}

// tlsActive notes a TLS connection that may wait for keys.
func (w *worker) tlsActive(c *conn) {
	if w.tlsConns == nil {
		w.tlsConns = map[*conn]struct{}{}
	}
	w.tlsConns[c] = struct{}{}
}

// pollTLS lets the TLS connections decrypt what waited for keys that have
// arrived (or give it up past --tls-hold-time), and finishes the closes
// that waited for them; with force (a hand-over), every waiting close is
// finished now, except of connections the successor rebuilds.
func (w *worker) pollTLS(force bool) {
	ts := w.tr.Now()
	w.capLingering()
	for c := range w.tlsConns {
		if c.closed {
			delete(w.tlsConns, c)
			continue
		}
		if force && c.linger != nil && c.replayable {
			// A hand-over: every batch of the connection is held and
			// goes back to the server; the successor rebuilds it, close
			// included, perhaps with keys this instance has not got. Its
			// close is not published here.
			delete(w.tlsConns, c)
			delete(w.lingerSet, c)
			continue
		}
		c.tls.poll(ts)
		if c.linger == nil && !c.closed {
			// Records decrypted now (their keys came) may hold the last
			// close_notify.
			w.tr.CloseEnded(c.tc)
		}
		if c.linger != nil && (force || !c.tls.waiting()) {
			a := c.linger
			c.finishClose(a.reason, a.tsNs, a.c2s, a.s2c)
		}
		if c.closed || (c.linger == nil && !c.tls.waiting() && !c.tls.detecting()) {
			delete(w.tlsConns, c)
		}
	}
}

// captureNow estimates the capture time now: the capture time of the last
// packet processed plus the wall time since — an estimate computed afresh
// each time, never added to the clock it advances — and only as far as the
// consumer is known to be caught up: up to the sending of the latest fetch
// that found nothing more pending, so frames still on their way (a NATS
// outage, a backlog) never look like silence. While batches are gathered
// for a recovery, or wait to be processed in stream order, the clock does
// not advance at all. 0 means no estimate (the tracker keeps its clock).
func (w *worker) captureNow() int64 {
	if w.lastPktWall.IsZero() || w.recovering || len(w.redelivered) > 0 {
		return 0
	}
	quiet := w.caughtUpAt.Load() - w.lastPktWall.UnixNano()
	if quiet <= 0 {
		return 0
	}
	return w.lastPktNs + quiet
}

// pubTick is the rest of tick: publishes acknowledged, in-progress acks,
// gauges.
func (w *worker) pubTick() {
	w.pub.poll()
	keep := w.pending[:0]
	now := time.Now()
	for _, b := range w.pending {
		if b.acked {
			continue
		}
		if now.Sub(b.touched) > w.e.cfg.AckWait/3 {
			_ = w.e.nc.Publish(b.reply, proto.ProgressBody)
			b.touched = now
		}
		keep = append(keep, b)
	}
	clear(w.pending[len(keep):])
	w.pending = keep
	for _, g := range w.redelivered {
		if now.Sub(g.touched) > w.e.cfg.AckWait/3 {
			_ = w.e.nc.Publish(g.m.Reply(), proto.ProgressBody)
			g.touched = now
		}
	}
	q := w.holdQ[:0]
	for _, c := range w.holdQ {
		if c.closed || !c.replayable {
			c.queued = false
			continue
		}
		q = append(q, c)
	}
	clear(w.holdQ[len(q):])
	w.holdQ = q
	w.flushStats()
}

func (w *worker) flushStats() {
	m := w.e.m
	m.conns.WithLabelValues(w.sid).Set(float64(w.tr.Conns()))
	m.buffered.WithLabelValues(w.sid).Set(float64(w.tr.Buffered()))
	m.held.WithLabelValues(w.sid).Set(float64(w.held))
	m.inflight.WithLabelValues(w.sid).Set(float64(len(w.pub.q)))
	m.streamBytes.WithLabelValues(string(proto.ClientToServer)).Add(float64(w.streamBytes[0]))
	m.streamBytes.WithLabelValues(string(proto.ServerToClient)).Add(float64(w.streamBytes[1]))
	w.streamBytes = [2]int64{}
	s := w.tr.Stats
	m.framesIgnored.WithLabelValues("not_tcp").Add(float64(s.NotTCP - w.lastStats.NotTCP))
	m.framesIgnored.WithLabelValues("fragment").Add(float64(s.Fragments - w.lastStats.Fragments))
	m.framesIgnored.WithLabelValues("malformed").Add(float64(s.Malformed - w.lastStats.Malformed))
	m.framesIgnored.WithLabelValues("stray").Add(float64(s.Ignored - w.lastStats.Ignored))
	m.causalHeld.Add(float64(s.Held - w.lastStats.Held))
	w.lastStats = s
}

func (w *worker) consumerInfo(ctx context.Context, cons jetstream.Consumer) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := cons.Info(ictx)
	if err != nil {
		return
	}
	w.e.m.pending.WithLabelValues(w.sid).Set(float64(info.NumPending))
	w.e.m.ackPending.WithLabelValues(w.sid).Set(float64(info.NumAckPending))
	w.pruneDone(info.AckFloor.Stream)
}

// handOver stops consuming and gives the shard to the next owner so that it
// rebuilds every open connection exactly: entries in flight are stored,
// connections that cannot be rebuilt (their early batches were already
// acknowledged) are closed here with reason shutdown, every batch not
// acknowledged — the held ones and the ones received but not processed —
// is negatively acknowledged in stream order so the server redelivers them
// first, and the pin is released.
func (w *worker) handOver(msgs <-chan jetstream.Msg) {
	log := w.e.log.With("shard", w.shard)
	var unprocessed []jetstream.Msg
	for m := range msgs {
		unprocessed = append(unprocessed, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w.pub.retryCtx = ctx
	w.pubErr = nil
	w.pollTLS(true)
	w.tr.CloseIf(func(c *tcp.Conn) bool {
		cc, ok := c.User.(*conn)
		return !ok || !cc.replayable
	}, tcp.CloseShutdown)
	flushing := w.e.drain.Begin(fmt.Sprintf("reassemble shard %d: %d publishes awaiting their JetStream acks", w.shard, len(w.pub.q)))
	if err := w.pub.flush(); err != nil {
		log.Warn("hand-over: publishes not confirmed; their batches are redelivered", "err", err)
	}
	flushing()
	type unacked struct {
		seq   uint64
		reply string
	}
	var nak []unacked
	for _, b := range w.pending {
		if !b.acked {
			b.acked = true
			nak = append(nak, unacked{b.seq, b.reply})
		}
	}
	for _, m := range unprocessed {
		if m != nil {
			nak = append(nak, unacked{seqOf(m), m.Reply()})
		}
	}
	for _, g := range w.redelivered {
		nak = append(nak, unacked{g.seq, g.m.Reply()})
	}
	w.redelivered = nil
	clear(w.gatheredSeq)
	slices.SortFunc(nak, func(a, b unacked) int { return cmp.Compare(a.seq, b.seq) })
	// One at a time, each confirmed by the server: the redelivery queue
	// then holds them in stream order, before the pin is released.
	for _, u := range nak {
		if _, err := w.e.nc.RequestWithContext(ctx, u.reply, proto.NakBody); err != nil {
			log.Warn("hand-over: nak", "err", err)
			_ = w.e.nc.Publish(u.reply, proto.NakBody)
		}
	}
	if w.owned {
		stream, err := w.e.js.Stream(ctx, proto.FramesStream)
		if err == nil {
			err = stream.UnpinConsumer(ctx, w.consName, priorityGroup)
		}
		if err != nil {
			log.Debug("hand-over: unpin", "err", err)
		}
		w.e.ownershipEvent(w.shard, "released")
	}
	w.flushStats()
	log.Info("shard handed over", "instance", w.e.cfg.InstanceID, "redelivered_batches", len(nak), "open_connections", w.tr.Conns())
}
