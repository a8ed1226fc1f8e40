package replay

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/replaytest"
)

// BenchmarkDeliveryLedger measures what the delivery ledger (a key-value
// write before the last frame of a batch of messages and one per
// confirmation batch) costs on the hot path: a backlog of b.N small
// messages over 50 connections is replayed as fast as the test system
// reads, with the ledger off and on, in the same run. Compare the msgs/s
// of the two sub-benchmarks.
func BenchmarkDeliveryLedger(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			e := newEnvURL(b, natsChild(b))
			srv := newSinkServer(b)
			const nConns = 50
			var all []*nats.Msg
			convs := make([]*conv, nConns)
			for i := range convs {
				convs[i] = newConv(i, fmt.Sprintf("/bench/%d", i))
				all = append(all, convs[i].open("websocket"))
			}
			payload := make([]byte, 200)
			for i := range b.N {
				c := convs[i%nConns]
				m := replaytest.Message{Conn: c.id, VNI: c.vni, Shard: c.shard, Client: c.client, Server: c.server,
					Dir: proto.ClientToServer, Seq: uint64(i/nConns + 1), Opcode: proto.OpBinary, Payload: payload, FirstNs: 1}
				for ch := range m.Chunks() {
					all = append(all, ch)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			for _, m := range all {
				if _, err := e.js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-e.js.PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatal("publish timed out")
			}
			b.ResetTimer()
			start := time.Now()
			e.startReplay(func(c *Config) { c.noDeliveryLedger = !on }, "--target", srv.url, "--compare=false", "--results", "off")
			for range b.N {
				<-srv.msgs
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
