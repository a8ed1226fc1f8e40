package replay

import (
	"encoding/binary"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// BenchmarkSmallLatencyJetStreamOnly is the second baseline: the same load
// published to JetStream and consumed by a plain pull consumer, without
// replay or WebSocket; the difference to BenchmarkSmallLatency is what
// replay adds.
func BenchmarkSmallLatencyJetStreamOnly(b *testing.B) {
	e := newEnvURL(b, natsChild(b))
	ctx := b.Context()
	cons, err := e.js.CreateOrUpdateConsumer(ctx, proto.MsgsStream, jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	it, _ := cons.Messages(jetstream.PullMaxBytes(8 << 20))
	lat := make(chan time.Duration, b.N)
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				return
			}
			lat <- time.Since(time.Unix(0, int64(binary.LittleEndian.Uint64(m.Data()))))
			m.Ack()
		}
	}()
	payload := make([]byte, 200)
	b.ResetTimer()
	paced(b.N, func(i int) {
		binary.LittleEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		if _, err := e.js.PublishAsync(proto.MsgsSubject(1, 1), append([]byte(nil), payload...), jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	})
	var l []time.Duration
	for range b.N {
		l = append(l, <-lat)
	}
	it.Stop()
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	b.ReportMetric(float64(l[len(l)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(l[len(l)*99/100].Microseconds())/1000, "p99-ms")
}
