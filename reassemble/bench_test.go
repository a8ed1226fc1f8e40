package reassemble

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tcp"
)

// nullOutput discards what a decoder produces, counting bytes.
type nullOutput struct{ bytes, msgs int64 }

func (o *nullOutput) Open(*proto.OpenEvent) {}
func (o *nullOutput) Chunk(c *proto.Chunk, b []byte) {
	o.bytes += int64(len(b))
	if c.Last {
		o.msgs++
	}
}
func (o *nullOutput) SwapDirections() {}

// benchHandler drives a decoder from the tracker.
type benchHandler struct {
	dec message.Decoder
}

func (h *benchHandler) Data(d proto.Direction, b []byte, ts int64) { h.dec.Data(d, b, ts) }
func (h *benchHandler) Gap(d proto.Direction, _, n, ts int64, _ string) {
	h.dec.Gap(d, n, ts)
}
func (h *benchHandler) Close(_ string, ts int64, _, _ tcp.Loss) { h.dec.Close(ts) }

// benchTraffic is one WebSocket connection: handshake, then server binary
// messages of msgSize bytes, total bytes of payload, in segments of mss.
func benchTraffic(tb testing.TB, total, msgSize, mss int) (frames []framebatch.Frame, payload int64) {
	clock := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(tb, "10.7.0.1:50000", "10.7.0.2:443", 9, &clock)
	add := func(f framebatch.Frame) { frames = append(frames, f) }
	add(c.frame(true, "S", nil))
	add(c.frame(false, "SA", nil))
	add(c.frame(true, "PA", []byte(upgradeReq)))
	add(c.frame(false, "PA", []byte(upgradeResp)))
	msg := pattern(msgSize, 1)
	var s2c []byte
	for n := 0; n < total; n += msgSize {
		s2c = append(s2c, wsFrame(2, msg, false)...)
		payload += int64(len(msg))
	}
	for off := 0; off < len(s2c); off += mss {
		add(c.frame(false, "PA", s2c[off:min(off+mss, len(s2c))]))
	}
	add(c.frame(false, "FA", nil))
	add(c.frame(true, "FA", nil))
	return frames, payload
}

// batches encodes frames as ~64 KiB pcapng batches, as decap publishes them.
func batches(frames []framebatch.Frame) [][]byte {
	var out [][]byte
	var w framebatch.Writer
	for i := range frames {
		w.Add(&frames[i])
		if w.Len() >= 64<<10 {
			out = append(out, append([]byte(nil), w.Bytes()...))
			w.Reset()
		}
	}
	if w.Frames() > 0 {
		out = append(out, append([]byte(nil), w.Bytes()...))
	}
	return out
}

// reassembleBatches is the engine's hot path without NATS: batch decoding,
// TCP reassembly and message decoding.
func reassembleBatches(tb testing.TB, bs [][]byte, newDec DecoderFunc) *nullOutput {
	out := &nullOutput{}
	tr := tcp.New(tcp.Config{}, func(c *tcp.Conn) tcp.Handler {
		meta := message.Meta{Conn: c.ID, VNI: c.VNI, Client: c.Client().String(), Server: c.Server().String(), ClientKnown: c.SYN, MidStream: c.Mid}
		return &benchHandler{dec: newDec(meta, out, message.Limits{})}
	})
	var f framebatch.Frame
	for _, b := range bs {
		r := framebatch.NewReader(b)
		for r.Next(&f) == nil {
			tr.Packet(&f)
		}
	}
	tr.CloseAll(tcp.CloseShutdown)
	return out
}

// BenchmarkReassemble measures batch decoding + TCP reassembly + WebSocket
// frame parsing, in payload bytes per second on one core.
func BenchmarkReassemble(b *testing.B) {
	for _, tc := range []struct {
		name     string
		mss, msg int
		dec      DecoderFunc
	}{
		{"ws-mss1448", 1448, 64 << 10, message.New},
		{"ws-jumbo8949", 8949, 64 << 10, message.New},
		{"raw-mss1448", 1448, 64 << 10, newRawDecoder},
	} {
		b.Run(tc.name, func(b *testing.B) {
			frames, payload := benchTraffic(b, 32<<20, tc.msg, tc.mss)
			bs := batches(frames)
			b.SetBytes(payload)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out := reassembleBatches(b, bs, tc.dec)
				if tc.dec != nil && out.bytes < payload {
					b.Fatalf("decoded %d of %d bytes", out.bytes, payload)
				}
			}
		})
	}
}

// BenchmarkVsTools runs, on the same capture file of one 16 MiB WebSocket
// connection: this engine's path from the file (decap's capture reader,
// TCP reassembly, WebSocket parsing), `tshark -q -z follow,tcp,raw,0` and
// `tcpflow`. Bytes per second are of TCP payload.
func BenchmarkVsTools(b *testing.B) {
	frames, payload := benchTraffic(b, 16<<20, 64<<10, 1448)
	dir := b.TempDir()
	path := filepath.Join(dir, "ws16m.pcap")
	fh, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := pcapgo.NewWriterNanos(fh)
	if err := w.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		b.Fatal(err)
	}
	for _, f := range frames {
		ci := gopacketCI(f)
		if err := w.WritePacket(ci, f.Data); err != nil {
			b.Fatal(err)
		}
	}
	fh.Close()
	b.Run("reassemble", func(b *testing.B) {
		b.SetBytes(payload)
		for i := 0; i < b.N; i++ {
			out := &nullOutput{}
			tr := tcp.New(tcp.Config{}, func(c *tcp.Conn) tcp.Handler {
				meta := message.Meta{Conn: c.ID, Client: c.Client().String(), Server: c.Server().String(), ClientKnown: c.SYN}
				return &benchHandler{dec: message.New(meta, out, message.Limits{})}
			})
			if err := decap.ReadCapture(path, func(f *framebatch.Frame) error { tr.Packet(f); return nil }); err != nil {
				b.Fatal(err)
			}
			tr.CloseAll(tcp.CloseShutdown)
			if out.bytes != payload {
				b.Fatalf("decoded %d of %d", out.bytes, payload)
			}
		}
	})
	for _, tool := range []struct {
		name string
		args []string
	}{
		{"tshark", []string{"tshark", "-q", "-z", "follow,tcp,raw,0", "-r", path}},
		{"tcpflow", []string{"tcpflow", "-r", path, "-o", filepath.Join(dir, "flows")}},
	} {
		b.Run(tool.name, func(b *testing.B) {
			if _, err := exec.LookPath(tool.args[0]); err != nil {
				b.Skipf("%s not installed", tool.args[0])
			}
			b.SetBytes(payload)
			for i := 0; i < b.N; i++ {
				os.RemoveAll(filepath.Join(dir, "flows"))
				os.MkdirAll(filepath.Join(dir, "flows"), 0o755)
				cmd := exec.Command(tool.args[0], tool.args[1:]...)
				var stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = nil, &stderr
				if err := cmd.Run(); err != nil {
					b.Fatalf("%s: %v: %s", tool.name, err, stderr.String())
				}
			}
		})
	}
}
