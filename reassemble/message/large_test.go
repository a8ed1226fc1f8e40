package message_test

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"runtime"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// pattern fills b with the bytes of a long message from offset off: text
// that compresses but not to nothing.
func pattern(b []byte, off int64) {
	for i := range b {
		x := off + int64(i)
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789 {}\",:"[(x*x/7+x>>9)%42]
	}
}

// heapWatch samples the heap while a test streams a large message.
type heapWatch struct{ base, peak uint64 }

func newHeapWatch() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &heapWatch{base: ms.HeapInuse}
}

func (h *heapWatch) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > h.peak {
		h.peak = ms.HeapInuse
	}
}

func (h *heapWatch) growth() uint64 {
	if h.peak < h.base {
		return 0
	}
	return h.peak - h.base
}

// TestLargeMessageStreamed streams a 100 MB message (one frame, masked
// and unmasked, and a compressed one in fragments) through a decoder and
// checks its digest, its chunking and that the heap stays far below the
// message size.
func TestLargeMessageStreamed(t *testing.T) {
	size := int64(100 << 20)
	if testing.Short() {
		size = 16 << 20
	}
	for _, tc := range []struct {
		name       string
		dir        proto.Direction
		compressed bool
	}{
		{"unmasked", proto.ServerToClient, false},
		{"masked", proto.ClientToServer, false},
		{"compressed", proto.ServerToClient, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := newCollector(t)
			col.keepBody = false
			dec := message.New(message.Meta{Conn: "big", Client: "10.0.0.1:4000", Server: "10.0.0.2:80", ClientKnown: true, MidStream: true}, col, message.Limits{})
			hw := newHeapWatch()
			want := sha256.New()
			var fed int64
			feedFn := func(b []byte) {
				for len(b) > 0 {
					n := min(len(b), 64<<10)
					dec.Data(tc.dir, b[:n], 1)
					b = b[n:]
					fed += int64(n)
					if fed%(8<<20) < 64<<10 {
						hw.sample()
					}
				}
			}
			// Mid-stream start: a few small frames first so the boundary verifies.
			for i := 0; i < 5; i++ {
				feedFn(frame(tc.dir == proto.ClientToServer, wsframe.OpText, true, false, []byte("hello there, small one")))
			}
			if tc.compressed {
				streamCompressed(t, size, want, feedFn)
			} else {
				streamPlain(tc.dir == proto.ClientToServer, size, want, feedFn)
			}
			feedFn(frame(tc.dir == proto.ClientToServer, wsframe.OpClose, true, false, []byte{0x03, 0xe8}))
			hw.sample()
			dec.Close(2)
			ms := dataMsgs(col.dir(tc.dir))
			if len(ms) != 6 {
				t.Fatalf("%d messages", len(ms))
			}
			big := ms[5]
			var sum [32]byte
			copy(sum[:], want.Sum(nil))
			if !big.Complete || big.Size != size || big.Sum != sum || big.Compressed != tc.compressed {
				t.Fatalf("big message complete=%v size=%d sum ok=%v", big.Complete, big.Size, big.Sum == sum)
			}
			if wantChunks := int((size + proto.MaxChunk - 1) / proto.MaxChunk); big.Chunks != wantChunks || col.maxChunk != proto.MaxChunk {
				t.Errorf("%d chunks (max %d bytes), want %d", big.Chunks, col.maxChunk, wantChunks)
			}
			if g := hw.growth(); g > 24<<20 {
				t.Errorf("heap grew by %d MiB while streaming a %d MiB message", g>>20, size>>20)
			}
			t.Logf("heap growth %.1f MiB for %d MiB", float64(hw.growth())/(1<<20), size>>20)
		})
	}
}

// frame builds one frame.
func frame(masked bool, op uint8, fin, rsv1 bool, payload []byte) []byte {
	h := wsframe.Header{Fin: fin, Opcode: op, Masked: masked, Length: uint64(len(payload)), Key: [4]byte{1, 2, 3, 4}}
	if rsv1 {
		h.Rsv = wsframe.RSV1
	}
	b := wsframe.Append(nil, h)
	p := bytes.Clone(payload)
	if masked {
		wsframe.MaskCopy(p, p, h.Key, 0)
	}
	return append(b, p...)
}

func streamPlain(masked bool, size int64, sum hash.Hash, feed func([]byte)) {
	h := wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Masked: masked, Length: uint64(size), Key: [4]byte{9, 8, 7, 6}}
	feed(wsframe.Append(nil, h))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-off)]
		pattern(b, off)
		sum.Write(b)
		if masked {
			wsframe.MaskCopy(b, b, h.Key, uint64(off))
		}
		feed(b)
	}
}

// streamCompressed sends a permessage-deflate message in 1 MiB fragments.
func streamCompressed(t *testing.T, size int64, sum hash.Hash, feed func([]byte)) {
	var out bytes.Buffer
	fw, err := flate.NewWriter(&out, 1)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	first := true
	for off := int64(0); off < size; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-off)]
		pattern(b, off)
		sum.Write(b)
		fw.Write(b)
		if out.Len() > 0 {
			op := uint8(wsframe.OpContinuation)
			if first {
				op = wsframe.OpText
			}
			feed(frame(false, op, false, first, out.Bytes()))
			first = false
			out.Reset()
		}
	}
	fw.Flush()
	b := bytes.TrimSuffix(out.Bytes(), []byte{0, 0, 0xff, 0xff})
	feed(frame(false, wsframe.OpContinuation, true, false, b))
}
