package archive

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
)

// keysMaxObject bounds the key lines gathered into one object.
const keysMaxObject = 4 << 20

// keepKeys (--keys) consumes TAPLINE_KEYS with its own durable consumer
// and stores the key log lines, as received, in objects
// keys/date=YYYY-MM-DD/hour=HH/<first seq>-<last seq>.keylog (query.KeyObject),
// dated by the time JetStream stored their first message. Messages are
// acknowledged once their object is stored; a redelivery only repeats
// lines, which readers deduplicate. It runs until ctx ends, then stores
// what it holds within DrainTimeout.
func (a *archiver) keepKeys(ctx context.Context, js jetstream.JetStream, d stage.Deps) {
	lines := prometheus.NewCounter(prometheus.CounterOpts{Name: "tapline_archive_key_messages_total", Help: "Messages of TLS key log lines stored with the archive (--keys)."})
	objects := prometheus.NewCounter(prometheus.CounterOpts{Name: "tapline_archive_key_objects_total", Help: "Objects of TLS key log lines stored (--keys)."})
	d.Metrics.MustRegister(lines, objects)
	var cons jetstream.Consumer
	provision := func() error {
		return retry(ctx, a.log, proto.ProvisionTimeout(a.cfg.Common.Streams.Replicas), "provision keys stream and consumer", func(ctx context.Context) error {
			if err := proto.EnsureStreams(ctx, js, a.cfg.Common.Streams, proto.KeysStream); err != nil {
				return err
			}
			var err error
			cons, err = js.CreateOrUpdateConsumer(ctx, proto.KeysStream, jetstream.ConsumerConfig{
				Durable:       a.cfg.KeysConsumer,
				Description:   "tapline archive: TLS key log lines kept with the archive",
				FilterSubject: proto.KeysPrefix + ".>",
				DeliverPolicy: jetstream.DeliverAllPolicy,
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       max(a.cfg.AckWait, 3*a.cfg.KeysFlush),
				MaxDeliver:    -1,
				MaxAckPending: 20000,
			})
			return err
		})
	}
	if provision() != nil {
		return // stopped
	}
	a.log.Info("keeping TLS key log lines with the archive", "consumer", a.cfg.KeysConsumer)
	var (
		pend       []jetstream.Msg
		buf        []byte
		first      time.Time
		firstSeq   uint64
		lastSeq    uint64
		gatheredAt time.Time
	)
	flush := func(ctx context.Context) {
		if len(pend) == 0 {
			return
		}
		key := query.KeyObject(first, firstSeq, lastSeq)
		err := retry(ctx, a.log, a.cfg.UploadTimeout, "store key lines", func(ctx context.Context) error {
			return a.st.Put(ctx, key, buf)
		})
		if err != nil {
			a.log.Warn("key lines not stored; JetStream redelivers them", "messages", len(pend), "err", err)
		} else {
			for _, m := range pend {
				_ = m.Ack()
			}
			lines.Add(float64(len(pend)))
			objects.Inc()
		}
		pend, buf = pend[:0], nil
	}
	for ctx.Err() == nil {
		b, err := cons.Fetch(256, jetstream.FetchMaxWait(min(time.Second, a.cfg.KeysFlush)))
		if err != nil {
			// NATS away, or the consumer deleted: provision it again.
			a.log.Warn("keys consumer fetch failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			if provision() != nil {
				break
			}
			continue
		}
		for m := range b.Messages() {
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if len(pend) == 0 {
				first, firstSeq, gatheredAt = md.Timestamp, md.Sequence.Stream, time.Now()
			}
			lastSeq = md.Sequence.Stream
			buf = append(buf, m.Data()...)
			if n := len(m.Data()); n > 0 && m.Data()[n-1] != '\n' {
				buf = append(buf, '\n')
			}
			pend = append(pend, m)
		}
		if len(pend) > 0 && (len(buf) >= keysMaxObject || len(pend) >= 10000 || time.Since(gatheredAt) >= a.cfg.KeysFlush) {
			flush(ctx)
		}
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.DrainTimeout)
	defer cancel()
	flush(dctx)
}
