package message_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// FuzzDecoder drives a Decoder with a random script of Data and Gap calls
// in both directions. The collector checks the output's invariants
// (chunk sizes, sequence numbers, chunk indexes, sizes, complete implies
// nothing missing); the decoder must never panic or hold unbounded memory.
//
// Script: byte 0 sets MidStream (bit 0) and ClientKnown (bit 1); then
// records of [op, len] followed by len bytes of data: op bit 0 is the
// direction, op bit 1 makes the record a Gap of len*op bytes instead.
func FuzzDecoder(f *testing.F) {
	hs := []byte(upgradeReq)
	resp := []byte(upgradeResp)
	add := func(flags byte, recs ...[]byte) {
		s := []byte{flags}
		for _, r := range recs {
			s = append(s, r...)
		}
		f.Add(s)
	}
	rec := func(op byte, b []byte) []byte {
		var out []byte
		for len(b) > 0 {
			n := min(len(b), 255)
			out = append(out, op, byte(n))
			out = append(out, b[:n]...)
			b = b[n:]
		}
		return out
	}
	add(2, rec(0, hs), rec(1, resp), rec(1, frame(false, wsframe.OpText, true, true, deflate([]byte("hi hi hi hi")))),
		rec(0, frame(true, wsframe.OpBinary, false, false, []byte("part one"))), rec(0, frame(true, wsframe.OpPing, true, false, []byte("p"))),
		rec(0, frame(true, wsframe.OpContinuation, true, false, []byte("part two"))))
	add(1, rec(1, frame(false, wsframe.OpText, true, false, []byte("mid stream text"))), rec(1, frame(false, wsframe.OpText, true, false, []byte("mid stream text 2"))),
		[]byte{3, 9}, rec(1, frame(false, wsframe.OpClose, true, false, []byte{3, 232})))
	add(0, rec(0, []byte("SSH-2.0-x\r\n")), []byte{2, 5}, rec(1, []byte("SSH-2.0-y\r\n")))
	add(2, rec(1, resp), rec(1, []byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x01, 'x'}))
	// A fragmented message whose first frame has a top-bit length, then
	// its continuations and text messages (the hunt resumes; the message
	// is flagged bad-frame, not dropped).
	text := []byte("the quick brown fox jumps over the lazy dog again and again")
	add(2, rec(1, resp), rec(1, []byte{0x02, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0x10}), rec(1, []byte("payload of the bad frame")),
		rec(1, frame(false, wsframe.OpContinuation, true, false, text)), rec(1, frame(false, wsframe.OpText, true, false, text)),
		rec(1, frame(false, wsframe.OpText, true, false, text)))
	// Lengths of 2^63-1 and 2 GiB without any gap: too-large, not gap.
	add(2, rec(1, resp), rec(1, []byte{0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3}))
	add(2, rec(1, resp), rec(1, []byte{0x82, 0x7f, 0, 0, 0, 0, 0x80, 0, 0, 0, 1, 2, 3}))
	// A gap over the next header of a fragmented message, then the close
	// while hunting: the message still gets its flagged last chunk.
	add(2, rec(1, resp), rec(1, frame(false, wsframe.OpBinary, false, false, text)), []byte{3, 3}, rec(1, text[:9]))
	// A gap inside a frame whose length is known, ending in the next frame
	// of the same message: the boundary after it is known.
	add(2, rec(1, resp), rec(1, frame(false, wsframe.OpBinary, false, false, text)[:20]), []byte{3, 13},
		rec(1, frame(false, wsframe.OpContinuation, true, false, text)), rec(1, frame(false, wsframe.OpText, true, false, text)))
	// The real captures as seeds: each direction's reassembled bytes.
	files, _ := filepath.Glob(filepath.Join(capturesDir, "ws-*.pcap*"))
	for _, p := range files {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		segs := readSegments(f, p)
		var s []byte
		for _, sg := range segs {
			if len(sg.payload) > 0 && len(sg.payload) < 256 {
				op := byte(0)
				if sg.dst < sg.src {
					op = 1
				}
				s = append(s, rec(op, sg.payload)...)
			}
		}
		add(0, s)
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) == 0 {
			return
		}
		col := newCollector(t)
		meta := message.Meta{Conn: "f", Client: "1.1.1.1:1000", Server: "2.2.2.2:80", MidStream: script[0]&1 != 0, ClientKnown: script[0]&2 != 0}
		dec := message.New(meta, col, message.Limits{MaxMessage: 1 << 16})
		script = script[1:]
		swapped := false
		for len(script) >= 2 {
			op, n := script[0], int(script[1])
			script = script[2:]
			dir := proto.ClientToServer
			if (op&1 != 0) != swapped {
				dir = proto.ServerToClient
			}
			before := col.swaps
			if op&2 != 0 {
				dec.Gap(dir, int64(n)*int64(op|1), 1)
			} else {
				n = min(n, len(script))
				dec.Data(dir, script[:n], 1)
				script = script[n:]
			}
			if col.swaps != before {
				swapped = !swapped
			}
		}
		dec.Close(2)
		if len(col.opens) != 1 {
			t.Fatalf("%d open events", len(col.opens))
		}
		if len(col.open) != 0 {
			t.Fatalf("%d messages left without a last chunk", len(col.open))
		}
		for _, m := range col.msgs {
			if m.Size > 1<<16 {
				t.Fatalf("message of %d bytes past MaxMessage", m.Size)
			}
		}
		// The loss summary's counts are those of the messages published.
		for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
			if st, pub := dec.Stats(dir), publishedCounts(col.dir(dir)); !countsMatch(st, pub) {
				t.Fatalf("%s: stats %+v, published %+v", dir, st, pub)
			}
		}
	})
}
