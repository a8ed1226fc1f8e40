package message_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"testing"

	"github.com/gobwas/ws"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// discard is an Output that drops everything (what a benchmark measures
// is the decoder, not the consumer).
type discard struct{ n int64 }

func (d *discard) Open(*proto.OpenEvent)             {}
func (d *discard) SwapDirections()                   {}
func (d *discard) Chunk(c *proto.Chunk, body []byte) { d.n += int64(len(body)) }

const benchResp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"

// wsStream builds count frames of size bytes each (masked or not).
func wsStream(masked bool, size, count int) (stream []byte, payload int64) {
	p := make([]byte, size)
	pattern(p, 0)
	var b bytes.Buffer
	for i := 0; i < count; i++ {
		b.Write(frame(masked, wsframe.OpBinary, true, false, p))
	}
	return b.Bytes(), int64(size * count)
}

// segments cuts a stream as TCP would deliver it (MSS-sized pieces).
func segments(stream []byte, mss int) [][]byte {
	var out [][]byte
	for len(stream) > 0 {
		n := min(mss, len(stream))
		out = append(out, stream[:n])
		stream = stream[n:]
	}
	return out
}

func benchDecoder(b *testing.B, dir proto.Direction, segs [][]byte, payload int64) {
	b.SetBytes(payload)
	b.ReportAllocs()
	out := &discard{}
	defer func() {
		if out.n < payload {
			b.Fatalf("decoded %d bytes of %d", out.n, payload)
		}
	}()
	for b.Loop() {
		dec := message.New(message.Meta{Conn: "b", ClientKnown: true}, out, message.Limits{})
		dec.Data(proto.ClientToServer, []byte(upgradeReq), 1)
		dec.Data(proto.ServerToClient, []byte(benchResp), 1)
		for _, s := range segs {
			dec.Data(dir, s, 1)
		}
		dec.Close(2)
	}
}

// baselineGobwas reads the same bytes with gobwas/ws: ReadFrame (one
// allocation per frame) and Cipher to unmask.
func baselineGobwas(b *testing.B, stream []byte, payload int64) {
	b.SetBytes(payload)
	b.ReportAllocs()
	for b.Loop() {
		r := bufio.NewReaderSize(bytes.NewReader(stream), 64<<10)
		for {
			f, err := ws.ReadFrame(r)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if f.Header.Masked {
				ws.Cipher(f.Payload, f.Header.Mask, 0)
			}
		}
	}
}

func BenchmarkFrames(b *testing.B) {
	for _, tc := range []struct {
		name   string
		masked bool
		size   int
		count  int
	}{
		{"1MiB-unmasked", false, 1 << 20, 32},
		{"1MiB-masked", true, 1 << 20, 32},
		{"16KiB-masked", true, 16 << 10, 2048},
		{"200B-unmasked", false, 200, 100000},
	} {
		stream, payload := wsStream(tc.masked, tc.size, tc.count)
		dir := proto.ServerToClient
		if tc.masked {
			dir = proto.ClientToServer
		}
		b.Run(tc.name+"/tapline", func(b *testing.B) { benchDecoder(b, dir, segments(stream, 8948), payload) })
		b.Run(tc.name+"/gobwas-ReadFrame", func(b *testing.B) { baselineGobwas(b, stream, payload) })
	}
}

// compressedStream builds count permessage-deflate messages of size bytes
// compressed with context takeover.
func compressedStream(size, count int) (stream []byte, inflated int64, msgs [][]byte) {
	var out, z bytes.Buffer
	w, _ := flate.NewWriter(&z, 6)
	for i := 0; i < count; i++ {
		var m bytes.Buffer
		for m.Len() < size {
			fmt.Fprintf(&m, `{"seq":%d,"symbol":"ACME%d","bid":%d.%02d,"ask":%d,"venue":"XNAS","flags":[%d,%d]},`, m.Len(), i%97, m.Len()%1000, i%100, m.Len()%997, i, m.Len()%13)
		}
		msg := m.Bytes()[:size]
		w.Write(msg)
		w.Flush()
		c := bytes.TrimSuffix(z.Bytes(), []byte{0, 0, 0xff, 0xff})
		msgs = append(msgs, bytes.Clone(c))
		out.Write(frame(false, wsframe.OpText, true, true, c))
		z.Reset()
		inflated += int64(size)
	}
	return out.Bytes(), inflated, msgs
}

func BenchmarkInflate(b *testing.B) {
	for _, tc := range []struct {
		name        string
		size, count int
	}{
		{"64KiB-msgs", 64 << 10, 64},
		{"2KiB-msgs", 2 << 10, 2000},
	} {
		stream, inflated, msgs := compressedStream(tc.size, tc.count)
		b.Run(tc.name+"/tapline", func(b *testing.B) { benchDecoder(b, proto.ServerToClient, segments(stream, 8948), inflated) })
		b.Run(tc.name+"/stdlib-flate", func(b *testing.B) {
			// The naive receiver: compress/flate with the previous output as
			// the dictionary, whole message at a time (what coder/websocket does).
			b.SetBytes(inflated)
			b.ReportAllocs()
			tail := []byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}
			for b.Loop() {
				var dict []byte
				fr := flate.NewReader(nil)
				for _, m := range msgs {
					fr.(flate.Resetter).Reset(io.MultiReader(bytes.NewReader(m), bytes.NewReader(tail)), dict)
					out, err := io.ReadAll(fr)
					if err != nil {
						b.Fatal(err)
					}
					dict = append(dict, out...)
					if len(dict) > 32<<10 {
						dict = dict[len(dict)-32<<10:]
					}
				}
			}
		})
	}
}

// BenchmarkUnmask compares the unmasking loop with gobwas/ws's Cipher.
func BenchmarkUnmask(b *testing.B) {
	p := make([]byte, 1<<20)
	key := [4]byte{1, 2, 3, 4}
	b.Run("tapline-MaskCopy", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			wsframe.MaskCopy(p, p, key, 1)
		}
	})
	b.Run("gobwas-Cipher", func(b *testing.B) {
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			ws.Cipher(p, key, 1)
		}
	})
}
