package udpin

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLoopbackIntake: datagrams of 1400 bytes from one loopback
// sender through one intake socket (recvmmsg batches of 64), in bursts
// of 256 the reader catches up with, so none is dropped. It includes the
// sender's cost: compare ratios against a baseline of the same run.
func BenchmarkLoopbackIntake(b *testing.B) {
	in, err := Open(Config{Addrs: []string{"127.0.0.1:0"}, Sockets: 1, Batch: 64}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, func(ds []Datagram) { got.Add(int64(len(ds))) }) }()
	defer func() { cancel(); <-done; in.Close() }()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(in.Addrs()[0]))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	p := make([]byte, 1400)
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(256, b.N-sent)
		for range n {
			if _, err := conn.Write(p); err != nil {
				b.Fatal(err)
			}
		}
		sent += n
		deadline := time.Now().Add(10 * time.Second)
		for got.Load() < int64(sent) {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d datagrams received", got.Load(), sent)
			}
			runtime.Gosched()
		}
	}
}
