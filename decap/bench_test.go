package decap

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/decap/capture"
	"github.com/tapline/tapline/decap/decode"
	"github.com/tapline/tapline/decap/publish"
	"github.com/tapline/tapline/decap/shard"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
)

// benchDatagrams are the VXLAN payloads (UDP payloads to 4789) of the real
// AWS capture: 100 datagrams, inner frames 60-1514 bytes (mean ~218).
func benchDatagrams(b *testing.B) ([][]byte, int) {
	b.Helper()
	f, err := os.Open(captures + "aws-vpc-mirror-vxlan-ssh.pcap")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cr, err := capture.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	var out [][]byte
	total := 0
	var cp capture.Packet
	for cr.Next(&cp) == nil {
		k, err := flow.Parse(flow.LinkEthernet, cp.Data)
		if err != nil || k.L4Offset == 0 {
			b.Fatal("outer frame without UDP")
		}
		out = append(out, append([]byte(nil), cp.Data[k.L4Offset+8:]...))
		total += len(cp.Data) - k.L4Offset - 8
	}
	return out, total
}

var benchSrc = netip.MustParseAddr("172.31.0.238")

// BenchmarkDecodeShardBatch is decap's per-datagram work on one core:
// VXLAN decode, inner flow parse, checksum verification, counters, shard,
// and the copy into a pcapng frame batch (batches released at once).
func BenchmarkDecodeShardBatch(b *testing.B) {
	dgs, total := benchDatagrams(b)
	dec := decode.New(decode.Config{}, decode.NewStats())
	sh := shard.New(16, 0)
	var bt *batch.Batcher
	bt = batch.New(batch.Config{}, func(x *batch.Batch) { bt.Release(x) })
	var p decode.Packet
	b.SetBytes(int64(total / len(dgs)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dg := dgs[i%len(dgs)]
		if dec.Datagram(&p, dg, benchSrc, 4789, int64(i)) {
			bt.Add(&p.Frame, sh.Shard(&p.Key, p.HasFlow))
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// BenchmarkBaselineGopacketNewPacket is the naive path: gopacket's full
// NewPacket decoding of the VXLAN payload, its flow hash, and the same
// batch copy.
func BenchmarkBaselineGopacketNewPacket(b *testing.B) {
	dgs, total := benchDatagrams(b)
	var bt *batch.Batcher
	bt = batch.New(batch.Config{}, func(x *batch.Batch) { bt.Release(x) })
	b.SetBytes(int64(total / len(dgs)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dg := dgs[i%len(dgs)]
		pkt := gopacket.NewPacket(dg, layers.LayerTypeVXLAN, gopacket.Default)
		vx, _ := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
		if vx == nil {
			continue
		}
		sh := 0
		if nl := pkt.NetworkLayer(); nl != nil {
			h := nl.NetworkFlow().FastHash()
			if tl := pkt.TransportLayer(); tl != nil {
				h ^= tl.TransportFlow().FastHash()
			}
			sh = int(h % 16)
		}
		f := framebatch.Frame{TimeNs: int64(i), VNI: vx.VNI, Encap: framebatch.EncapVXLAN, Link: flow.LinkEthernet, OuterSrc: benchSrc, Data: vx.LayerPayload()}
		f.OrigLen = len(f.Data)
		bt.Add(&f, sh)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// BenchmarkBaselineGopacketDLP is gopacket's fast path
// (DecodingLayerParser, no allocation per layer) for the same work.
func BenchmarkBaselineGopacketDLP(b *testing.B) {
	dgs, total := benchDatagrams(b)
	var bt *batch.Batcher
	bt = batch.New(batch.Config{}, func(x *batch.Batch) { bt.Release(x) })
	var vx layers.VXLAN
	var eth layers.Ethernet
	var ip4 layers.IPv4
	var ip6 layers.IPv6
	var tcp layers.TCP
	var udp layers.UDP
	var pl gopacket.Payload
	parser := gopacket.NewDecodingLayerParser(layers.LayerTypeVXLAN, &vx, &eth, &ip4, &ip6, &tcp, &udp, &pl)
	parser.IgnoreUnsupported = true
	decoded := make([]gopacket.LayerType, 0, 8)
	b.SetBytes(int64(total / len(dgs)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dg := dgs[i%len(dgs)]
		_ = parser.DecodeLayers(dg, &decoded)
		sh := 0
		for _, lt := range decoded {
			switch lt {
			case layers.LayerTypeIPv4:
				sh = int(ip4.NetworkFlow().FastHash() % 16)
			case layers.LayerTypeIPv6:
				sh = int(ip6.NetworkFlow().FastHash() % 16)
			}
		}
		f := framebatch.Frame{TimeNs: int64(i), VNI: vx.VNI, Encap: framebatch.EncapVXLAN, Link: flow.LinkEthernet, OuterSrc: benchSrc, Data: vx.LayerPayload()}
		f.OrigLen = len(f.Data)
		bt.Add(&f, sh)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

func benchJetStream(b *testing.B) (*nats.Conn, jetstream.JetStream) {
	return benchJetStreamStorage(b, false)
}

// benchJetStreamStorage starts a server with the frames stream in file
// or (memory true) memory storage.
func benchJetStreamStorage(b *testing.B, memory bool) (*nats.Conn, jetstream.JetStream) {
	b.Helper()
	srv, err := natstest.Start(natstest.Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	opts := proto.StreamOptions{Frames: proto.StreamLimits{MaxBytes: 1 << 30}, Memory: memory}
	if err := proto.EnsureStreams(context.Background(), js, opts, proto.FramesStream); err != nil {
		b.Fatal(err)
	}
	return nc, js
}

// BenchmarkPublishBatches publishes 64 KiB frame batches (1 KiB frames)
// through decap's publisher to an embedded JetStream (file storage).
func BenchmarkPublishBatches(b *testing.B) { benchPublishBatches(b, false) }

// BenchmarkPublishBatchesMemory is BenchmarkPublishBatches into a memory
// stream: the publisher and server without the disk.
func BenchmarkPublishBatchesMemory(b *testing.B) { benchPublishBatches(b, true) }

// BenchmarkPublishBatchesCluster is BenchmarkPublishBatches into a 3-node
// cluster of embedded servers on loopback with the frames stream at 3
// replicas (file storage): the production shape, against the single
// server of BenchmarkPublishBatches in the same run.
func BenchmarkPublishBatchesCluster(b *testing.B) {
	c := natstest.RunCluster(b, 3)
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := proto.StreamOptions{Frames: proto.StreamLimits{MaxBytes: 1 << 30}, Replicas: 3}
	if err := proto.EnsureStreams(ctx, js, opts, proto.FramesStream); err != nil {
		b.Fatal(err)
	}
	publishBatches(b, nc)
}

func benchPublishBatches(b *testing.B, memory bool) {
	nc, _ := benchJetStreamStorage(b, memory)
	publishBatches(b, nc)
}

// publishBatches publishes b.N 64 KiB batches through decap's publisher.
func publishBatches(b *testing.B, nc *nats.Conn) {
	frame := make([]byte, 1024)
	var w framebatch.Writer
	for w.Len() < 64<<10-1100 {
		w.Add(&framebatch.Frame{Encap: framebatch.EncapVXLAN, VNI: 1, Link: flow.LinkEthernet, Data: frame, OrigLen: 1024})
	}
	// Prebuilt batches recycled through free: the benchmark measures
	// publishing, not batch building.
	free := make(chan *framebatch.Writer, 512)
	for range cap(free) {
		bw := &framebatch.Writer{}
		setSection(bw, w.Bytes())
		free <- bw
	}
	p, err := publish.New(nc, publish.Config{}, nil, slog.New(slog.DiscardHandler), func(bt *batch.Batch) { free <- bt.W })
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	b.SetBytes(int64(w.Len()))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Submit(&batch.Batch{Subject: proto.FramesSubject(1, i%16), W: <-free}, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := p.Drain(ctx); err != nil {
		b.Fatal(err)
	}
	if len(p.Drops()) != 0 {
		b.Fatalf("drops %v", p.Drops())
	}
}

// setSection fills w with the frames of a prebuilt section.
func setSection(w *framebatch.Writer, body []byte) {
	r := framebatch.NewReader(body)
	var f framebatch.Frame
	for r.Next(&f) == nil {
		w.Add(&f)
	}
}

// BenchmarkPublishPerFrame is the baseline: one JetStream message per
// 1 KiB frame, async with up to 256 in flight.
func BenchmarkPublishPerFrame(b *testing.B) {
	_, js := benchJetStream(b)
	frame := make([]byte, 1024)
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := js.PublishAsync(proto.FramesSubject(1, i%16), frame, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("acks did not complete")
	}
}

// BenchmarkPublishRaw64K is the ceiling: 64 KiB messages with the
// JetStream client's own async publishing, nothing else.
func BenchmarkPublishRaw64K(b *testing.B) {
	_, js := benchJetStream(b)
	body := make([]byte, 64<<10)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := js.PublishAsync(proto.FramesSubject(1, i%16), body, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("acks did not complete")
	}
}

// BenchmarkPublishRaw64KMsgID is BenchmarkPublishRaw64K with a
// Nats-Msg-Id on every message (JetStream de-duplication), as decap sends.
func BenchmarkPublishRaw64KMsgID(b *testing.B) {
	_, js := benchJetStream(b)
	body := make([]byte, 64<<10)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := &nats.Msg{Subject: proto.FramesSubject(1, i%16), Data: body, Header: nats.Header{jetstream.MsgIDHeader: []string{"x-" + strconv.Itoa(i)}}}
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("acks did not complete")
	}
}
