package message

import (
	"unsafe"

	"github.com/tapline/tapline/reassemble/message/httpup"
)

// Sizer is implemented by the decoders of this package and by Resume:
// Memory estimates the bytes held beyond the fixed structures (which the
// caller charges as a per-connection constant). The reassembler charges
// it against its memory budget after every packet.
type Sizer interface {
	Memory() int64
}

// mapEntryCost is the charge of one map entry of the hunt's indexes
// (key, value and the map's overhead per entry).
const mapEntryCost = 48

// Memory returns the bytes the decoder holds: per direction the header
// block being read, the upgrade request kept, the open message's chunk
// buffer, a control frame's bytes, the hunt's buffer and chains, the
// inflater and prober; and the parsed HTTP messages.
func (d *decoder) Memory() int64 {
	n := headerMemory(d.req) + headerMemory(d.resp)
	for _, s := range d.sides {
		if s != nil {
			n += s.memory()
		}
	}
	return n
}

func (s *side) memory() int64 {
	n := int64(cap(s.hdr) + cap(s.raw) + cap(s.em.buf) + cap(s.ctl) + cap(s.probeBuf) + cap(s.scratch))
	h := &s.hunt
	if !h.borrowed {
		n += int64(cap(h.buf))
	}
	n += int64(cap(h.cands)) * int64(unsafe.Sizeof(&cand{}))
	n += int64(len(h.cands)) * int64(unsafe.Sizeof(cand{}))
	n += int64(len(h.at)+len(h.cum)+len(h.marks)) * mapEntryCost
	if s.infl != nil {
		n += s.infl.Memory()
	}
	if s.prober != nil {
		n += s.prober.Memory()
	}
	return n
}

// headerMemory estimates what a parsed HTTP message holds.
func headerMemory(m *httpup.Message) int64 {
	if m == nil {
		return 0
	}
	n := int64(unsafe.Sizeof(*m)) + int64(len(m.Method)+len(m.Target))
	for k, v := range m.Header {
		n += int64(len(k)+len(v)) + mapEntryCost
	}
	for _, k := range m.Names {
		n += int64(len(k)) + int64(unsafe.Sizeof(k))
	}
	return n
}

// Memory returns the bytes the resume record holds (the HTTP messages it
// keeps; they may be shared with the closed decoder, which is gone).
func (r *Resume) Memory() int64 {
	if r == nil {
		return 0
	}
	return int64(unsafe.Sizeof(*r)) + int64(len(r.Conn)) + headerMemory(r.req) + headerMemory(r.resp)
}
