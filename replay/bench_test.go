package replay

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/replaytest"
)

// sinkServer is a loopback WebSocket test system for benchmarks: it reads
// and discards, reporting each message's size, and for small messages the
// latency since the send time stamped in their first 8 bytes.
type sinkServer struct {
	url  string
	msgs chan int64

	mu  sync.Mutex
	lat []time.Duration
}

func newSinkServer(b *testing.B) *sinkServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &sinkServer{url: "ws://" + ln.Addr().String(), msgs: make(chan int64, 1<<16)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.SetReadLimit(-1)
		buf := make([]byte, 256<<10)
		for {
			_, rd, err := c.Reader(context.Background())
			if err != nil {
				return
			}
			var n int64
			var stamp []byte
			for {
				k, err := rd.Read(buf)
				if n == 0 && k >= 8 {
					stamp = buf[:8]
				}
				n += int64(k)
				if err == io.EOF {
					break
				}
				if err != nil {
					return
				}
			}
			if n < 4096 && stamp != nil {
				d := time.Since(time.Unix(0, int64(binary.LittleEndian.Uint64(stamp))))
				s.mu.Lock()
				s.lat = append(s.lat, d)
				s.mu.Unlock()
			}
			s.msgs <- n
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *sinkServer) percentiles() (p50, p99 time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lat) == 0 {
		return 0, 0
	}
	l := append([]time.Duration(nil), s.lat...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[len(l)/2], l[len(l)*99/100]
}

const benchLargeSize = 32 << 20

// BenchmarkLargeMessage measures large-message payload throughput from
// JetStream through replay to a loopback test system: each iteration
// publishes one 32 MiB message (not timed) and times its delivery.
func BenchmarkLargeMessage(b *testing.B) {
	e := newEnvURL(b, natsChild(b))
	srv := newSinkServer(b)
	e.startReplay(nil, "--target", srv.url, "--compare=false", "--results", "off")
	payload := make([]byte, benchLargeSize)
	replaytest.Gen(1)(0, payload)
	c := newConv(1, "/bench")
	e.publish(c.open("websocket"))
	b.SetBytes(benchLargeSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		m := c.add(proto.ClientToServer, proto.OpBinary, payload)
		m.Seq = uint64(i + 1) // distinct de-duplication ids
		e.publishMsg(m)
		c.msgs = c.msgs[:0]
		b.StartTimer()
		if n := <-srv.msgs; n != benchLargeSize {
			b.Fatalf("test system read %d bytes", n)
		}
	}
}

// BenchmarkLargeMessageDirect is the baseline: the same bytes written to
// the same kind of test system directly with coder/websocket, 1 MiB per
// write, without JetStream or replay.
func BenchmarkLargeMessageDirect(b *testing.B) {
	srv := newSinkServer(b)
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, srv.url, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseNow()
	payload := make([]byte, benchLargeSize)
	replaytest.Gen(1)(0, payload)
	b.SetBytes(benchLargeSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w, err := c.Writer(ctx, websocket.MessageBinary)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(payload); off += proto.MaxChunk {
			if _, err := w.Write(payload[off : off+proto.MaxChunk]); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		<-srv.msgs
	}
}

// smallRate is the offered load of the latency benchmarks.
const smallRate = 10000

// BenchmarkSmallLatency offers 10,000 small messages per second spread over
// 50 connections, published to JetStream, and reports the latency from
// publication to the test system reading the message (p50/p99), i.e. what
// JetStream plus replay add. b.N is the number of messages.
func BenchmarkSmallLatency(b *testing.B) { smallLatency(b, nil) }

// BenchmarkSmallLatencyNoLedger is BenchmarkSmallLatency with the delivery
// ledger off: the difference is what exactly-once across restarts costs.
func BenchmarkSmallLatencyNoLedger(b *testing.B) {
	smallLatency(b, func(c *Config) { c.noDeliveryLedger = true })
}

// BenchmarkSmallLatencyResults is BenchmarkSmallLatency with every
// result stored on TAPLINE_RESULTS: the results round trip is settled
// beside delivery, not part of it.
func BenchmarkSmallLatencyResults(b *testing.B) { smallLatencyResults(b, nil, "all") }

func smallLatency(b *testing.B, mod func(*Config)) { smallLatencyResults(b, mod, "off") }

func smallLatencyResults(b *testing.B, mod func(*Config), results string) {
	e := newEnvURL(b, natsChild(b))
	srv := newSinkServer(b)
	e.startReplay(mod, "--target", srv.url, "--compare=false", "--results", results)
	const nConns = 50
	convs := make([]*conv, nConns)
	var opens []*nats.Msg
	for i := range convs {
		convs[i] = newConv(i, fmt.Sprintf("/lat/%d", i))
		opens = append(opens, convs[i].open("websocket"))
	}
	e.publish(opens...)
	seqs := make([]uint64, nConns)
	payload := make([]byte, 200)
	b.ResetTimer()
	paced(b.N, func(i int) {
		c := convs[i%nConns]
		seqs[i%nConns]++
		binary.LittleEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		m := replaytest.Message{Conn: c.id, VNI: c.vni, Shard: c.shard, Client: c.client, Server: c.server,
			Dir: proto.ClientToServer, Seq: seqs[i%nConns], Opcode: proto.OpBinary, Payload: payload, FirstNs: 1}
		for ch := range m.Chunks() {
			if _, err := e.js.PublishMsgAsync(ch, jetstream.WithStallWait(time.Minute)); err != nil {
				b.Fatal(err)
			}
		}
	})
	for range b.N {
		<-srv.msgs
	}
	b.StopTimer()
	p50, p99 := srv.percentiles()
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

// BenchmarkSmallLatencyDirect is the baseline: the same load written
// directly over 50 WebSocket connections, without JetStream or replay.
func BenchmarkSmallLatencyDirect(b *testing.B) {
	srv := newSinkServer(b)
	ctx := context.Background()
	const nConns = 50
	conns := make([]*websocket.Conn, nConns)
	for i := range conns {
		c, _, err := websocket.Dial(ctx, srv.url, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		conns[i] = c
	}
	payload := make([]byte, 200)
	b.ResetTimer()
	paced(b.N, func(i int) {
		binary.LittleEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		if err := conns[i%nConns].Write(ctx, websocket.MessageBinary, payload); err != nil {
			b.Fatal(err)
		}
	})
	for range b.N {
		<-srv.msgs
	}
	b.StopTimer()
	p50, p99 := srv.percentiles()
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

// paced calls send n times at smallRate per second (in 1 ms batches).
func paced(n int, send func(i int)) {
	start := time.Now()
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * time.Second / smallRate)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		send(i)
	}
}
