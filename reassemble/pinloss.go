package reassemble

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// pinLost is called when a fetch is refused because the server pinned the
// shard to another instance while this one was alive: it stopped pulling
// for --pinned-ttl (a stall: CPU starvation, a long pause, a network
// partition) and was unpinned. Its held batches would otherwise be kept
// alive with in-progress acks for ever, and the new owner would wait for
// them until its recovery deadline and then move their connections past
// their bytes. So the instance hands over what it holds as at a graceful
// stop — in-flight entries stored, connections that cannot be rebuilt
// closed (shutdown), every unacknowledged batch negatively acknowledged in
// stream order — without unpinning the new owner, forgets its
// connections (the new owner rebuilds them from the redelivered batches)
// and goes on asking for the shard.
func (w *worker) pinLost(ctx context.Context, msgs <-chan jetstream.Msg) {
	// Deliveries already received come before the refusal.
	for len(msgs) > 0 {
		if m := <-msgs; m != nil {
			w.handle(m)
		}
	}
	if !w.owned && len(w.pending) == 0 && len(w.redelivered) == 0 {
		return
	}
	w.e.log.Warn("shard pinned to another instance; handing over the batches this instance holds",
		"shard", w.shard, "instance", w.e.cfg.InstanceID, "open_connections", w.tr.Conns())
	gctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	n := w.giveBack(gctx, nil)
	cancel()
	w.pub.retryCtx = ctx
	w.pubErr = nil
	w.tr = w.newTracker()
	w.pending, w.cur = nil, nil
	clear(w.bySeq)
	w.holdQ, w.held = nil, 0
	w.recovering, w.paused = false, false
	w.fetchPause.Store(0)
	w.owned = false
	w.e.ownershipEvent(w.shard, "released")
	w.flushStats()
	w.e.log.Info("shard handed over after losing the pin", "shard", w.shard, "redelivered_batches", n)
}
