package reassemble

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// BenchmarkPublish: one shard's publisher storing messages on an
// embedded JetStream server: small messages of one connection (each
// waits for the previous one's acknowledgement), of 64 connections
// interleaved, and a large message's full chunks. Compare the figures
// with those of the previous publisher measured in the same run.
func BenchmarkPublish(b *testing.B) {
	for _, tc := range []struct {
		name  string
		conns int
		size  int
		per   int // chunks per message
	}{
		{"1conn-1KiB", 1, 1 << 10, 1},
		{"64conns-1KiB", 64, 1 << 10, 1},
		{"1conn-960KiB-chunks", 1, proto.MaxChunk, 16},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, url := natstest.Run(b)
			nc, err := nats.Connect(url)
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := proto.EnsureStreams(ctx, js, proto.StreamOptions{}, proto.MsgsStream); err != nil {
				b.Fatal(err)
			}
			p := benchPublisher(js, nc, ctx)
			body := make([]byte, tc.size)
			subject := proto.MsgsSubject(1, 0)
			conns := make([]string, tc.conns)
			for i := range conns {
				conns[i] = "bench-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			}
			b.SetBytes(int64(tc.size * tc.per))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range tc.per {
					c := &proto.Chunk{Conn: conns[i%tc.conns], VNI: 1, Dir: proto.ServerToClient, Seq: uint64(i/tc.conns + 1), Index: k, Last: k == tc.per-1, Opcode: proto.OpBinary, Complete: true}
					h := c.Header()
					if err := p.publish(&nats.Msg{Subject: subject, Header: h, Data: body}, nil); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := p.flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func benchPublisher(js jetstream.JetStream, nc *nats.Conn, ctx context.Context) *publisher {
	return &publisher{js: js, log: slog.Default(), max: 256, maxBytes: 16 << 20, maxConn: 16,
		release: func(*batch) {}, onStored: func() {}, onRetry: func() {}, connected: nc.IsConnected, retryCtx: ctx}
}
