package replay

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// redeliverFetchWait is how long one fetch of the redeliveries waits for
// entries: JetStream hands out its redelivery queue before anything new,
// so an empty fetch means the queue is empty.
const redeliverFetchWait = time.Second

// redeliverInOrder takes the entries a crashed replay on this durable left
// unacknowledged, which JetStream redelivers now (awaitRedelivery waited
// for their ack wait), and hands them to the workers in stream order.
//
// JetStream redelivers the entries whose ack wait expired at each of its
// checks sorted, but one check's entries after the previous check's. The
// crashed replay's in-progress acknowledgements reached the server at
// different moments, so its entries expire at different checks: the later
// chunks of a large message can come back before its first ones, more of
// them than a worker holds back (maxHeldChunks), and the message could
// not be finished. Sorting them here restores the order.
//
// It collects until it has the entries the previous replay left
// (prevPending), an entry delivered for the first time comes (the
// redeliveries are over), a fetch finds nothing, or redeliveryWait has passed.
// Payloads beyond half of --max-inflight are dropped and fetched again at
// their turn, so collecting costs metadata only past the budget.
func (r *runner) redeliverInOrder(ctx context.Context, cons jetstream.Consumer) {
	if r.prevPending == 0 {
		return
	}
	deadline := time.Now().Add(r.redeliveryWait())
	var got []*entry
	var payload int64
	seen, fresh := 0, false
	for seen < r.prevPending && !fresh && time.Now().Before(deadline) && ctx.Err() == nil {
		batch, err := cons.FetchBytes(r.cfg.PullMaxBytes, jetstream.FetchMaxWait(redeliverFetchWait))
		if err != nil {
			r.log.Debug("fetch of redeliveries", "err", err)
			break
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			seen++
			if meta, err := msg.Metadata(); err == nil && meta.NumDelivered == 1 {
				fresh = true
			}
			e := r.receive(msg)
			if e == nil {
				continue
			}
			if e.kind == proto.KindData && len(e.data) > 0 {
				if payload+int64(len(e.data)) > r.cfg.MaxInflight/2 {
					e.data, e.held = nil, -1
				} else {
					payload += int64(len(e.data))
				}
			}
			got = append(got, e)
		}
		if n == 0 {
			break
		}
	}
	inOrder := slices.IsSortedFunc(got, byStreamSeq)
	slices.SortFunc(got, byStreamSeq)
	r.log.Info("redelivered entries handed on in stream order", "entries", len(got), "left_by_previous", r.prevPending, "came_out_of_order", !inOrder)
	for _, e := range got {
		r.enqueue(e)
	}
}

func byStreamSeq(a, b *entry) int { return cmp.Compare(a.streamSeq, b.streamSeq) }
