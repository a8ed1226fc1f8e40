package message_test

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand"
	"sort"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// A vstream is a generated WebSocket direction that is never held whole:
// payload bytes are computed from their position, so streams of hundreds
// of MB cost no memory. Tests cut gaps (by stream offset) into it and
// feed it to a Decoder in segment-sized pieces.
type vstream struct {
	masked bool
	msgs   []vmsg
	frames []vframe
	size   int64
}

// vmsg is one message the sender produced (a data message or a control
// frame).
type vmsg struct {
	op   uint8 // wsframe opcode of its first frame
	size int64
	seed uint64
	text bool
	sum  [32]byte
	// bad: how its first frame violates the protocol (badNone: it does not).
	bad int
	// frames of the message, indexes into vstream.frames.
	first, last int
}

// Protocol violations a generated message's first frame can carry.
const (
	badNone   = iota
	badTopBit // a 64-bit length with the top bit set
	badRSV2   // RSV2 set: no extension explains it
)

// vframe is one frame of a vstream.
type vframe struct {
	off  int64 // stream offset of the header
	hdr  []byte
	plen int64
	msg  int   // index in vstream.msgs
	moff int64 // offset of the payload in its message
	key  [4]byte
}

func (f *vframe) end() int64 { return f.off + int64(len(f.hdr)) + f.plen }

// splitmix64 is the payload generator: word i of a message with seed s is
// splitmix64(s + i).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// fill writes the unmasked bytes [off, off+len(dst)) of message m.
func (m *vmsg) fill(dst []byte, off int64) {
	for i := range dst {
		p := off + int64(i)
		w := splitmix64(m.seed + uint64(p>>3))
		b := byte(w >> (8 * (p & 7)))
		if m.text {
			// lower-case words: valid UTF-8 that reads as text
			b = "abcdefghijklmnopqrstuvwxyz  etaoin"[b%34]
		}
		dst[i] = b
	}
}

// vspec describes one message to generate.
type vspec struct {
	op    uint8
	size  int64
	frame int64 // fragment size (0: one frame)
	text  bool
	bad   int
}

// newVstream lays out the messages of specs; pings every pingEvery
// fragments (0: none) go between the fragments of a message.
func newVstream(rng *rand.Rand, masked bool, specs []vspec, pingEvery int) *vstream {
	v := &vstream{masked: masked}
	addFrame := func(h wsframe.Header, msg int, moff int64) {
		if masked {
			h.Masked = true
			binary.LittleEndian.PutUint32(h.Key[:], rng.Uint32())
		}
		f := vframe{off: v.size, msg: msg, moff: moff, plen: int64(h.Length), key: h.Key}
		f.hdr = wsframe.Append(nil, h)
		if v.msgs[msg].bad == badTopBit && moff == 0 && !wsframe.IsControl(h.Opcode) {
			// 127 and the length with its top bit set
			f.hdr[1] = f.hdr[1]&0x80 | 127
			var l [8]byte
			binary.BigEndian.PutUint64(l[:], h.Length|1<<63)
			hdr := append([]byte{f.hdr[0], f.hdr[1]}, l[:]...)
			if masked {
				hdr = append(hdr, h.Key[:]...)
			}
			f.hdr = hdr
		}
		v.frames = append(v.frames, f)
		v.size = f.end()
	}
	addMsg := func(sp vspec) int {
		m := vmsg{op: sp.op, size: sp.size, seed: rng.Uint64(), text: sp.text, bad: sp.bad}
		v.msgs = append(v.msgs, m)
		return len(v.msgs) - 1
	}
	frags := 0
	for _, sp := range specs {
		mi := addMsg(sp)
		v.msgs[mi].first = len(v.frames)
		if wsframe.IsControl(sp.op) {
			addFrame(wsframe.Header{Fin: true, Opcode: sp.op, Length: uint64(sp.size)}, mi, 0)
			v.msgs[mi].last = len(v.frames) - 1
			continue
		}
		fs := sp.frame
		if fs <= 0 || fs > sp.size {
			fs = max(sp.size, 1)
		}
		for off := int64(0); ; {
			n := min(fs, sp.size-off)
			op := sp.op
			if off > 0 {
				op = wsframe.OpContinuation
			}
			h := wsframe.Header{Fin: off+n == sp.size, Opcode: op, Length: uint64(n)}
			if sp.bad == badRSV2 && off == 0 {
				h.Rsv = 2
			}
			addFrame(h, mi, off)
			v.msgs[mi].last = len(v.frames) - 1
			off += n
			if off >= sp.size {
				break
			}
			frags++
			if pingEvery > 0 && frags%pingEvery == 0 {
				pi := addMsg(vspec{op: wsframe.OpPing, size: int64(rng.Intn(126)), text: true})
				v.msgs[pi].first = len(v.frames)
				addFrame(wsframe.Header{Fin: true, Opcode: wsframe.OpPing, Length: uint64(v.msgs[pi].size)}, pi, 0)
				v.msgs[pi].last = len(v.frames) - 1
			}
		}
	}
	// The digests of the messages, as their receiver got them.
	buf := make([]byte, 1<<20)
	for i := range v.msgs {
		m := &v.msgs[i]
		h := sha256.New()
		for off := int64(0); off < m.size; off += int64(len(buf)) {
			b := buf[:min(int64(len(buf)), m.size-off)]
			m.fill(b, off)
			h.Write(b)
		}
		copy(m.sum[:], h.Sum(nil))
	}
	return v
}

// read writes the stream bytes [off, off+len(dst)).
func (v *vstream) read(dst []byte, off int64) {
	i := sort.Search(len(v.frames), func(i int) bool { return v.frames[i].end() > off })
	for len(dst) > 0 {
		f := &v.frames[i]
		if off < f.off+int64(len(f.hdr)) {
			n := copy(dst, f.hdr[off-f.off:])
			dst, off = dst[n:], off+int64(n)
			continue
		}
		pos := off - f.off - int64(len(f.hdr))
		n := min(int64(len(dst)), f.plen-pos)
		v.msgs[f.msg].fill(dst[:n], f.moff+pos)
		if v.masked {
			wsframe.MaskCopy(dst[:n], dst[:n], f.key, uint64(pos))
		}
		dst, off = dst[n:], off+n
		i++
	}
}

// vcut is a lost byte range [from, to) of the stream.
type vcut struct{ from, to int64 }

// feed gives the stream to dec as direction dir, in segments of seg bytes,
// with the cuts (sorted, not overlapping) as gaps, then closes dec.
func (v *vstream) feed(dec message.Decoder, dir proto.Direction, seg int, cuts []vcut) {
	buf := make([]byte, seg)
	var ts int64 = 1
	ci := 0
	for off := int64(0); off < v.size; {
		if ci < len(cuts) && off >= cuts[ci].from {
			to := min(cuts[ci].to, v.size)
			dec.Gap(dir, to-off, ts)
			off = to
			ci++
			ts++
			continue
		}
		n := min(int64(seg), v.size-off)
		if ci < len(cuts) {
			n = min(n, cuts[ci].from-off)
		}
		v.read(buf[:n], off)
		dec.Data(dir, buf[:n], ts)
		off += n
		ts++
	}
	dec.Close(ts)
}
