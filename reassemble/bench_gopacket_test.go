package reassemble

import (
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/reassembly"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/reassemble/tcp"
)

// gpStream counts the bytes gopacket's reassembly delivers.
type gpStream struct{ n *int64 }

func (s gpStream) Accept(*layers.TCP, gopacket.CaptureInfo, reassembly.TCPFlowDirection, reassembly.Sequence, *bool, reassembly.AssemblerContext) bool {
	return true
}
func (s gpStream) ReassembledSG(sg reassembly.ScatterGather, _ reassembly.AssemblerContext) {
	n, _ := sg.Lengths()
	*s.n += int64(n)
}
func (s gpStream) ReassemblyComplete(reassembly.AssemblerContext) bool { return true }

type gpFactory struct{ n *int64 }

func (f gpFactory) New(_, _ gopacket.Flow, _ *layers.TCP, _ reassembly.AssemblerContext) reassembly.Stream {
	return gpStream(f)
}

type gpContext struct{ ci gopacket.CaptureInfo }

func (c *gpContext) GetCaptureInfo() gopacket.CaptureInfo { return c.ci }

// BenchmarkTCPOnly compares TCP reassembly alone (no message decoding) on
// the same 32 MiB connection: this package's tcp.Tracker against
// gopacket's reassembly (with gopacket's layer decoding, which it needs).
func BenchmarkTCPOnly(b *testing.B) {
	frames, _ := benchTraffic(b, 32<<20, 64<<10, 1448)
	var stream int64
	for _, f := range frames {
		stream += int64(f.OrigLen)
	}
	bs := batches(frames)
	b.Run("tapline-tcp", func(b *testing.B) {
		b.SetBytes(stream)
		for i := 0; i < b.N; i++ {
			var n int64
			tr := tcp.New(tcp.Config{}, func(c *tcp.Conn) tcp.Handler { return countHandler{&n} })
			var f framebatch.Frame
			for _, batch := range bs {
				r := framebatch.NewReader(batch)
				for r.Next(&f) == nil {
					tr.Packet(&f)
				}
			}
			tr.CloseAll(tcp.CloseShutdown)
			if n < stream/2 {
				b.Fatalf("reassembled %d bytes", n)
			}
		}
	})
	b.Run("gopacket-reassembly", func(b *testing.B) {
		b.SetBytes(stream)
		for i := 0; i < b.N; i++ {
			var n int64
			asm := reassembly.NewAssembler(reassembly.NewStreamPool(gpFactory{&n}))
			var f framebatch.Frame
			ctx := &gpContext{}
			for _, batch := range bs {
				r := framebatch.NewReader(batch)
				for r.Next(&f) == nil {
					p := gopacket.NewPacket(f.Data, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true, Lazy: true})
					t, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
					if !ok {
						continue
					}
					ctx.ci = gopacket.CaptureInfo{Timestamp: time.Unix(0, f.TimeNs), CaptureLength: len(f.Data), Length: f.OrigLen}
					asm.AssembleWithContext(p.NetworkLayer().NetworkFlow(), t, ctx)
				}
			}
			asm.FlushAll()
			if n < stream/2 {
				b.Fatalf("reassembled %d bytes", n)
			}
		}
	})
}

type countHandler struct{ n *int64 }

func (h countHandler) Data(_ proto.Direction, b []byte, _ int64)        { *h.n += int64(len(b)) }
func (h countHandler) Gap(proto.Direction, int64, int64, int64, string) {}
func (h countHandler) Close(string, int64, tcp.Loss, tcp.Loss)          {}
