package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/replay/pace"
)

// settleGrace is how long results may still be stored once replay stops.
const settleGrace = 5 * time.Second

// resultAckTimeout is how long a result's publication waits for
// JetStream's acknowledgement before it is published again.
const resultAckTimeout = 5 * time.Second

// cleanStopKey is the consumer metadata key a replay sets when it stopped
// cleanly, having handed its held entries back.
const cleanStopKey = "tapline_replay_clean_stop"

// runner is one running replay engine.
type runner struct {
	cfg    *Config
	log    *slog.Logger
	m      *metrics
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	acks   *ackTracker
	budget *budget
	pacer  *pace.Pacer
	res    *resultsPub
	client *http.Client
	listen []*hub
	opens  *openLedger // nil when the bucket could not be set up

	slots chan struct{}
	wctx  context.Context // workers' context: ends after the consumer stopped
	sctx  context.Context // settlers' context: ends settleGrace after wctx

	consCfg     jetstream.ConsumerConfig
	prevPending int  // entries a previous replay left unacknowledged
	prevClean   bool // ... and handed back (NAK) when it stopped

	credsWarn sync.Once // credentialsRemoved's log line

	mu       sync.Mutex
	workers  map[string]*worker
	finished map[string]finishedConn // connections whose close event was processed
	wg       sync.WaitGroup
}

// Run consumes the messages stream and replays it until ctx ends, then
// stops cleanly (unacknowledged messages stay in JetStream) and returns nil.
func Run(ctx context.Context, cfg Config, d stage.Deps) error {
	// Every check /healthz needs, failing until registered: connected to
	// NATS is not healthy before the streams and the consumer exist.
	d.Health.Expect("nats", "streams", "consumer")
	if err := cfg.Validate(); err != nil {
		return err
	}
	r := &runner{cfg: &cfg, log: d.Log, workers: map[string]*worker{}}
	r.slots = make(chan struct{}, cfg.MaxConns)
	nc, js, err := cfg.Common.Connect(ctx, "tapline-replay", d.Log)
	if err != nil {
		return err
	}
	defer nc.Close()
	r.nc = nc
	r.acks = newAckTracker(nc)
	r.acks.before = cfg.beforeAck
	m, err := newMetrics(d.Metrics, func() float64 { return float64(r.acks.count()) })
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	r.m = m
	d.Health.Add("nats", stage.NATSCheck(nc))
	// Results are published asynchronously on a JetStream context of our
	// own; each connection's settler waits for their acknowledgements and
	// publishes again what was not stored (an unanswered publish times out).
	rjs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(resultAckTimeout))
	if err != nil {
		return err
	}
	r.js = js
	subj := cfg.ResultsSubjFn
	if subj == nil {
		subj = proto.ResultsSubject
	}
	r.res = &resultsPub{js: rjs, level: cfg.ResultsLevel, subj: subj, log: d.Log, m: m}
	r.budget = newBudget(cfg.MaxInflight)
	r.pacer = pace.New(cfg.pace)
	r.client = cfg.httpClient()

	for _, spec := range cfg.listens {
		h, err := newHub(spec, r.cfg, d.Log, m)
		if err != nil {
			r.closeHubs()
			return fmt.Errorf("--listen %s: %w", spec.Addr, err)
		}
		d.Log.Info("listening for the test system", "addr", h.Addr(), "upstream", spec.Upstream)
		if cfg.onListen != nil {
			cfg.onListen(spec.Upstream, h.Addr())
		}
		r.listen = append(r.listen, h)
	}
	defer r.closeHubs()

	if err := stage.ProvisionStreams(ctx, d, js, cfg.Common.Streams, proto.MsgsStream, proto.ResultsStream); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	cons, err := r.setup(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	d.Health.Add("consumer", func() error { return nil })
	lctx, lcancel := context.WithTimeout(ctx, max(10*time.Second, proto.ProvisionTimeout(cfg.Common.Streams.Replicas)))
	if l, err := newOpenLedger(lctx, js, cfg.Durable, cfg.Common.Streams.Replicas); err == nil {
		r.opens = l
	} else {
		d.Log.Warn("no open event ledger: connections whose open event was acknowledged are replayed without it", "err", err)
	}
	lcancel()

	wctx, stopWorkers := context.WithCancel(context.Background())
	r.wctx = wctx
	// Settlers get settleGrace after the workers stop to store the last
	// results; what is not stored by then stays unacknowledged.
	sctx, stopSettlers := context.WithCancel(context.Background())
	defer stopSettlers()
	r.sctx = sctx
	context.AfterFunc(wctx, func() { time.AfterFunc(settleGrace, stopSettlers) })
	go r.acks.keepAlive(wctx, cfg.AckWait/3)
	if err := r.awaitRedelivery(ctx); err != nil {
		stopWorkers()
		return nil
	}
	err = r.consume(ctx, cons)
	stopWorkers()
	r.wg.Wait()
	if !cfg.noNakOnStop {
		// Hand back what was not delivered: JetStream redelivers it first,
		// in order, to the next replay on this durable.
		r.acks.nakAll()
		_ = nc.Flush()
		r.markCleanStop(r.consCfg)
	}
	flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	select {
	case <-rjs.PublishAsyncComplete():
	case <-flush.Done():
	}
	cancel()
	_ = nc.Flush()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (r *runner) closeHubs() {
	for _, h := range r.listen {
		h.close()
	}
}

// awaitRedelivery protects the order of connections a previous replay on
// this durable left unfinished without handing its entries back (it
// crashed): JetStream redelivers them only once their ack wait expires, and
// would meanwhile deliver their connections' later entries first. So when
// entries are pending, replay waits one ack wait before pulling; the
// expired entries then come first, and redeliverInOrder puts them back in
// stream order.
func (r *runner) awaitRedelivery(ctx context.Context) error {
	if r.prevPending == 0 {
		return nil
	}
	// Even after a clean stop, entries JetStream delivered to the old
	// subscription after it stopped listening are redelivered only at
	// their ack wait: wait in both cases.
	wait := r.cfg.AckWait + time.Second
	r.log.Warn("a previous replay on this durable left entries unacknowledged; waiting for their redelivery so connections stay in order",
		"pending", r.prevPending, "clean_stop", r.prevClean, "wait", wait)
	return sleepCtx(ctx, wait)
}

// markCleanStop records on the consumer that its held entries were handed
// back, so the next replay need not wait for their redelivery.
func (r *runner) markCleanStop(cc jetstream.ConsumerConfig) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cc.Metadata = map[string]string{cleanStopKey: time.Now().UTC().Format(time.RFC3339)}
	if _, err := r.stream.UpdateConsumer(ctx, cc); err != nil {
		r.log.Warn("could not mark the consumer cleanly stopped", "err", err)
	}
}

// setup provisions the streams and the durable consumer, retrying while
// NATS is unreachable (the first request after a restart can be lost).
func (r *runner) setup(ctx context.Context) (jetstream.Consumer, error) {
	cfg := r.cfg
	var filters []string
	switch {
	case len(cfg.vnis) == 0 && len(cfg.shards) == 0:
		filters = []string{proto.MsgsPrefix + ".>"}
	case len(cfg.shards) == 0:
		for _, v := range cfg.vnis {
			filters = append(filters, fmt.Sprintf("%s.%d.*", proto.MsgsPrefix, v))
		}
	case len(cfg.vnis) == 0:
		for _, s := range cfg.shards {
			filters = append(filters, fmt.Sprintf("%s.*.%d", proto.MsgsPrefix, s))
		}
	default:
		for _, v := range cfg.vnis {
			for _, s := range cfg.shards {
				filters = append(filters, proto.MsgsSubject(v, s))
			}
		}
	}
	deliver := jetstream.DeliverAllPolicy
	if cfg.Deliver == "new" {
		deliver = jetstream.DeliverNewPolicy
	}
	cc := jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		Description:    "tapline replay",
		DeliverPolicy:  deliver,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  100000,
		FilterSubjects: filters,
	}
	if len(filters) == 1 {
		cc.FilterSubject, cc.FilterSubjects = filters[0], nil
	}
	r.consCfg = cc
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := sleepCtx(ctx, min(time.Duration(attempt)*250*time.Millisecond, 2*time.Second)); err != nil {
				return nil, fmt.Errorf("set up JetStream: %w (last error: %v)", err, lastErr)
			}
		}
		actx, cancel := context.WithTimeout(ctx, proto.ProvisionTimeout(cfg.Common.Streams.Replicas))
		err := proto.EnsureStreams(actx, r.js, cfg.Common.Streams, proto.MsgsStream, proto.ResultsStream)
		var cons jetstream.Consumer
		if err == nil {
			r.stream, err = r.js.Stream(actx, proto.MsgsStream)
		}
		if err == nil {
			// What the previous replay on this durable left (before the
			// update below clears its clean-stop mark).
			if prev, perr := r.stream.Consumer(actx, cfg.Durable); perr == nil {
				if info, ierr := prev.Info(actx); ierr == nil {
					r.prevPending = info.NumAckPending
					r.prevClean = info.Config.Metadata[cleanStopKey] != ""
				}
			}
			cons, err = r.stream.CreateOrUpdateConsumer(actx, cc)
		}
		cancel()
		if err == nil {
			return cons, nil
		}
		lastErr = err
		r.log.Warn("JetStream setup failed, retrying", "err", err)
	}
}

// consume pulls entries and hands them to the connection workers until
// ctx ends.
func (r *runner) consume(ctx context.Context, cons jetstream.Consumer) error {
	r.redeliverInOrder(ctx, cons)
	it, err := cons.Messages(jetstream.PullMaxBytes(r.cfg.PullMaxBytes), jetstream.PullHeartbeat(2*time.Second))
	if err != nil {
		return err
	}
	// On shutdown, drain: entries already pulled but not dispatched are
	// handed back at once, so the next replay gets them first.
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			r.log.Debug("pull", "err", err)
			continue
		}
		if ctx.Err() != nil {
			// Not dispatched: held, and handed back with the rest in
			// stream order when the workers have stopped.
			if meta, err := msg.Metadata(); err == nil {
				r.acks.track(meta.Sequence.Stream, msg.Reply())
			}
			continue
		}
		r.dispatch(msg)
		if r.cfg.afterDispatch != nil {
			if meta, err := msg.Metadata(); err == nil {
				r.cfg.afterDispatch(meta.Sequence.Stream, meta.NumDelivered)
			}
		}
	}
}

// dispatch hands one pulled entry to its connection's worker.
func (r *runner) dispatch(msg jetstream.Msg) {
	if e := r.receive(msg); e != nil {
		r.enqueue(e)
	}
}

// receive holds a pulled entry for acknowledgement and decodes it; it
// returns nil when nothing more is to be done with it (a redelivery of an
// entry still being replayed, a malformed entry reported failed, a stale
// redelivery acknowledged).
func (r *runner) receive(msg jetstream.Msg) *entry {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return nil
	}
	seq := meta.Sequence.Stream
	if !r.acks.track(seq, msg.Reply()) {
		return nil // a redelivery of an entry still being replayed
	}
	e, err := parseEntry(msg.Subject(), msg.Headers(), msg.Data())
	if err != nil {
		r.m.errors.WithLabelValues("parse").Inc()
		r.log.Warn("malformed entry on the messages stream", "subject", msg.Subject(), "seq", seq, "err", err)
		res := otherResult(Result{Kind: "message", Conn: msg.Headers().Get(proto.HdrConn), Result: "failed", Reason: "malformed entry: " + err.Error()})
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if r.res.store(r.sctx, []pendingResult{res}) {
				r.acks.ack(seq)
			}
		}()
		return nil
	}
	e.streamSeq, e.reply, e.arrived, e.delivered = seq, msg.Reply(), meta.Timestamp, meta.NumDelivered
	if r.staleRedelivery(e, e.delivered) {
		r.acks.ack(seq)
		return nil
	}
	return e
}

// enqueue queues a received entry on its connection's worker, its
// payload held against the in-flight budget.
func (r *runner) enqueue(e *entry) {
	if len(e.data) > 0 {
		// Wait a little for room (the usual flow control), then queue the
		// entry without its payload rather than block every connection
		// behind a slow one.
		if n, ok := r.budget.acquireWithin(int64(len(e.data)), 250*time.Millisecond); ok {
			e.held = n
		} else {
			e.data, e.held = nil, -1 // fetched again when its turn comes
		}
	}
	r.mu.Lock()
	if r.staleRedeliveryLocked(e, e.delivered) {
		// The connection finished while the entry waited for room.
		r.mu.Unlock()
		r.release(e)
		r.acks.ack(e.streamSeq)
		return
	}
	r.workerFor(e).q.push(e)
	r.mu.Unlock()
}

// staleRedelivery reports whether e is a redelivered entry of a
// connection this replay has finished (JetStream does not redeliver
// strictly in order) that needs nothing more. While the connection's
// worker exists (finishing, say) its entries go to it: the ledger is
// complete only when it has finished.
func (r *runner) staleRedelivery(e *entry, delivered uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.staleRedeliveryLocked(e, delivered)
}

func (r *runner) staleRedeliveryLocked(e *entry, delivered uint64) bool {
	if delivered <= 1 || r.workers[e.conn] != nil {
		return false
	}
	f, ok := r.finished[e.conn]
	return ok && r.staleAfterClose(e, f.mark)
}

// workerFor returns the worker of e's connection, starting one if needed
// (r.mu held). A connection finished before starts with what its delivery
// ledger said then.
func (r *runner) workerFor(e *entry) *worker {
	w := r.workers[e.conn]
	if w != nil {
		return w
	}
	w = newWorker(r, e)
	if f, ok := r.finished[e.conn]; ok {
		w.mark, w.prev, w.led, w.markLoaded = f.mark.clone(), f.prev.clone(), f.led.clone(), true
	}
	r.workers[e.conn] = w
	r.m.conns.Inc()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		w.run(r.wctx)
	}()
	return w
}

// staleAfterClose reports whether an entry that came after its
// connection's close event needs nothing more: an event, a message of the
// direction not replayed, or one the delivery ledger says was handled.
// JetStream redelivers out of order: a message not handled yet is
// replayed, not dropped.
func (r *runner) staleAfterClose(e *entry, mark deliveryMark) bool {
	c := &e.chunk
	return e.kind != proto.KindData || c.Dir != proto.Direction(r.cfg.Dir) || mark.doneSeq(c.Seq, e.streamSeq)
}

// retire removes a worker that has finished (end: close, idle or
// shutdown). Entries queued meanwhile were not processed: after a close,
// those the delivery ledger (now complete: every message the worker wrote
// is confirmed or reported) says need nothing more are acknowledged and
// dropped; the others go to a new worker, which starts from that ledger.
// After an idle end the new worker goes on with the connection. At
// shutdown they stay held and are handed back.
func (r *runner) retire(w *worker, end string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.workers[w.id] == w {
		delete(r.workers, w.id)
	}
	r.m.conns.Dec()
	if end == "shutdown" {
		return
	}
	if end == "close" {
		r.markFinishedLocked(w.id, finishedConn{mark: w.mark.clone(), prev: w.prev.clone(), led: w.ledger()})
	}
	w.q.mu.Lock()
	rest := w.q.items
	w.q.items = nil
	w.q.mu.Unlock()
	var late []*entry
	for _, e := range rest {
		if end == "close" && r.staleAfterClose(e, w.mark) {
			r.release(e)
			r.acks.ack(e.streamSeq)
			continue
		}
		late = append(late, e)
	}
	if len(late) > 0 {
		nw := r.workerFor(late[0])
		for _, e := range late {
			nw.q.push(e)
		}
	}
}

// finishedConn is what replay keeps of a connection whose close event was
// processed: its delivery ledger then (as known and as stored).
type finishedConn struct {
	mark, prev, led deliveryMark
}

// markFinishedLocked remembers a connection whose close event was
// processed, with its delivery ledger (r.mu held).
func (r *runner) markFinishedLocked(conn string, f finishedConn) {
	if r.finished == nil || len(r.finished) >= 100000 {
		r.finished = map[string]finishedConn{} // bounded: forget the oldest all at once
	}
	r.finished[conn] = f
}

func (r *runner) acquireSlot(ctx context.Context) error {
	select {
	case r.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *runner) releaseSlot() { <-r.slots }

// fetch reads a chunk's payload again from the stream.
func (r *runner) fetch(ctx context.Context, seq uint64) ([]byte, error) {
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := r.stream.GetMsg(fctx, seq)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

func (r *runner) ack(e *entry) { r.acks.ack(e.streamSeq) }

// msgResult is the result of a message known by one entry (its last chunk).
func (r *runner) msgResult(w *worker, e *entry, result, reason string, lag float64) pendingResult {
	c := &e.chunk
	complete := c.Complete
	return messageResult(Result{Kind: "message", Conn: w.id, VNI: w.vni, shard: w.shard, Dir: c.Dir, Seq: c.Seq,
		Result: result, Reason: reason, Opcode: c.Opcode, Size: c.Size, Complete: &complete, Missing: c.Missing,
		Target: w.target(), LagMs: lag * 1000}, e.streamSeq)
}

// outResult is the result of a sent (or failed) message.
func (r *runner) outResult(w *worker, m *outMsg, result, reason string, lag float64) pendingResult {
	complete := m.last.Complete
	return messageResult(Result{Kind: "message", Conn: w.id, VNI: w.vni, shard: w.shard, Dir: m.first.Dir, Seq: m.first.Seq,
		Result: result, Reason: reason, Opcode: m.first.Opcode, Size: m.size, Complete: &complete, Missing: m.last.Missing,
		Target: w.target(), Attempts: m.tries + 1, LagMs: lag * 1000}, m.lastStream())
}
