package reassemble

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// consumeKeys feeds the key store from TAPLINE_KEYS (every source, from
// the start of the stream) until ctx ends: an ordered consumer, which
// the client recreates after a disconnect at the sequence it had reached.
func (e *engine) consumeKeys(ctx context.Context) {
	for backoff := 100 * time.Millisecond; ctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := e.js.OrderedConsumer(cctx, proto.KeysStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{proto.KeysPrefix + ".>"},
			DeliverPolicy:  jetstream.DeliverAllPolicy,
		})
		cancel()
		if err != nil {
			e.log.Warn("key stream consumer; retrying", "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			added, bad := e.keys.AddLines(m.Data(), time.Now())
			e.m.tlsKeys.WithLabelValues("stored").Add(float64(added))
			if bad > 0 {
				e.m.tlsKeys.WithLabelValues("bad").Add(float64(bad))
				// Never the line itself: it may hold a secret.
				e.log.Warn("key log lines dropped: not in the NSS key log format", "lines", bad, "subject", m.Subject())
			}
		})
		if err != nil {
			e.log.Warn("key stream consume; retrying", "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		<-ctx.Done()
		cc.Stop()
		return
	}
}
