package reassemble

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tcp"
	"github.com/tapline/tapline/reassemble/tlsdec"
)

// tlsBenchHandler drives TCP reassembly -> TLS decryption -> message
// decoding, the engine's TLS path without NATS.
type tlsBenchHandler struct {
	td  *tlsdec.Conn
	dec message.Decoder
	ts  int64
}

func (h *tlsBenchHandler) Data(d proto.Direction, b []byte, ts int64) {
	h.ts = ts
	h.td.Data(tlsDir(d), b, time.Time{})
}
func (h *tlsBenchHandler) Gap(d proto.Direction, _, n, ts int64, _ string) {
	h.td.Gap(tlsDir(d), n, time.Time{})
}
func (h *tlsBenchHandler) Close(_ string, ts int64, _, _ tcp.Loss) {
	h.td.Close(time.Time{})
	h.dec.Close(ts)
}
func (h *tlsBenchHandler) Plaintext(d int, b []byte)     { h.dec.Data(protoDir(d), b, h.ts) }
func (h *tlsBenchHandler) Lost(d int, n int64, _ string) { h.dec.Gap(protoDir(d), n, h.ts) }

func runFrames(bs [][]byte, open tcp.Opener) {
	tr := tcp.New(tcp.Config{}, open)
	var f framebatch.Frame
	for _, b := range bs {
		r := framebatch.NewReader(b)
		for r.Next(&f) == nil {
			tr.Packet(&f)
		}
	}
	tr.CloseAll(tcp.CloseShutdown)
}

// BenchmarkTLSvsPlaintext runs, in each iteration, the same WebSocket
// push (32 x 1 MiB binary messages, or 8000 x 1000 B: one record per
// segment; no compression, MSS 1448) once as captured over TLS 1.3
// (AES-128-GCM: batch decoding, TCP reassembly, decryption, WebSocket
// parsing) and once as its decrypted plaintext (the same without
// decryption), and reports both throughputs in payload bytes and their
// ratio.
func BenchmarkTLSvsPlaintext(b *testing.B) {
	for _, shape := range []struct {
		name     string
		n, bytes int
	}{{"32x1MiB", 32, 1 << 20}, {"8000x1000B", 8000, 1000}} {
		sizes := make([]int, shape.n)
		for i := range sizes {
			sizes[i] = shape.bytes
		}
		b.Run(shape.name, func(b *testing.B) { benchTLSvsPlaintext(b, sizes) })
	}
}

func benchTLSvsPlaintext(b *testing.B, sizes []int) {
	cp := captureWSS(b, sizes, websocket.CompressionDisabled)
	ks := tlsdec.NewKeyStore(10, 0)
	ks.AddLines(cp.keylog, time.Now())
	// The plaintext streams of the same connection.
	var plain [2][]byte
	pc := tlsdec.NewConn(ks, tlsdec.Limits{}, sinkFunc(func(d int, p []byte) { plain[d] = append(plain[d], p...) }))
	pc.Data(0, cp.c2s, time.Now())
	pc.Data(1, cp.s2c, time.Now())
	pc.Close(time.Now())
	var payload int64
	for _, m := range cp.msgs {
		payload += int64(len(m))
	}
	tlsB := batches(tlsFrames(b, cp.writes, [2][]byte{cp.c2s, cp.s2c}, nil))
	plainB := batches(tlsFrames(b, []tlsWrite{{0, len(plain[0])}, {1, len(plain[1])}}, plain, nil))
	var tTLS, tPlain time.Duration
	b.SetBytes(2 * payload)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		out := &nullOutput{}
		runFrames(tlsB, func(c *tcp.Conn) tcp.Handler {
			meta := message.Meta{Conn: c.ID, Client: c.Client().String(), Server: c.Server().String(), ClientKnown: true}
			h := &tlsBenchHandler{dec: message.New(meta, out, message.Limits{})}
			h.td = tlsdec.NewConn(ks, tlsdec.Limits{}, h)
			return h
		})
		tTLS += time.Since(t0)
		if out.bytes < payload {
			b.Fatalf("tls: decoded %d of %d bytes", out.bytes, payload)
		}
		t0 = time.Now()
		out = &nullOutput{}
		runFrames(plainB, func(c *tcp.Conn) tcp.Handler {
			meta := message.Meta{Conn: c.ID, Client: c.Client().String(), Server: c.Server().String(), ClientKnown: true}
			return &benchHandler{dec: message.New(meta, out, message.Limits{})}
		})
		tPlain += time.Since(t0)
		if out.bytes < payload {
			b.Fatalf("plaintext: decoded %d of %d bytes", out.bytes, payload)
		}
	}
	mb := float64(payload) * float64(b.N) / 1e6
	b.ReportMetric(mb/tTLS.Seconds(), "tls-MB/s")
	b.ReportMetric(mb/tPlain.Seconds(), "plain-MB/s")
	b.ReportMetric(tPlain.Seconds()/tTLS.Seconds(), "tls/plain")
}

type sinkFunc func(d int, p []byte)

func (f sinkFunc) Plaintext(d int, p []byte) { f(d, p) }
func (f sinkFunc) Lost(int, int64, string)   {}

// BenchmarkTLSvsTshark decrypts the same capture (16 x 1 MiB over TLS
// 1.3) with this engine's path and with `tshark -z follow,tls,raw`
// given the same key log; bytes are payload.
func BenchmarkTLSvsTshark(b *testing.B) {
	sizes := make([]int, 16)
	for i := range sizes {
		sizes[i] = 1 << 20
	}
	cp := captureWSS(b, sizes, websocket.CompressionDisabled)
	var payload int64
	for _, m := range cp.msgs {
		payload += int64(len(m))
	}
	frames := tlsFrames(b, cp.writes, [2][]byte{cp.c2s, cp.s2c}, nil)
	dir := b.TempDir()
	pcap := filepath.Join(dir, "wss.pcap")
	keylog := filepath.Join(dir, "keys.txt")
	os.WriteFile(keylog, cp.keylog, 0o600)
	fh, err := os.Create(pcap)
	if err != nil {
		b.Fatal(err)
	}
	w := pcapgo.NewWriterNanos(fh)
	w.WriteFileHeader(262144, layers.LinkTypeEthernet)
	for _, f := range frames {
		w.WritePacket(gopacketCI(f), f.Data)
	}
	fh.Close()
	ks := tlsdec.NewKeyStore(10, 0)
	ks.AddLines(cp.keylog, time.Now())
	bs := batches(frames)
	b.Run("reassemble", func(b *testing.B) {
		b.SetBytes(payload)
		for i := 0; i < b.N; i++ {
			out := &nullOutput{}
			runFrames(bs, func(c *tcp.Conn) tcp.Handler {
				meta := message.Meta{Conn: c.ID, Client: c.Client().String(), Server: c.Server().String(), ClientKnown: true}
				h := &tlsBenchHandler{dec: message.New(meta, out, message.Limits{})}
				h.td = tlsdec.NewConn(ks, tlsdec.Limits{}, h)
				return h
			})
			if out.bytes < payload {
				b.Fatalf("decoded %d of %d bytes", out.bytes, payload)
			}
		}
	})
	b.Run("tshark", func(b *testing.B) {
		if _, err := exec.LookPath("tshark"); err != nil {
			b.Fatal("tshark not installed")
		}
		b.SetBytes(payload)
		for i := 0; i < b.N; i++ {
			if err := exec.Command("tshark", "-r", pcap, "-o", "tls.keylog_file:"+keylog, "-q", "-z", "follow,tls,raw,0").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
