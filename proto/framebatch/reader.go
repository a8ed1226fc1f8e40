package framebatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/tapline/tapline/proto/flow"
)

// ErrFormat wraps every decoding error: the input is not valid pcapng.
var ErrFormat = errors.New("framebatch: malformed pcapng")

// MaxBlock bounds one block's length; a longer block is malformed.
const MaxBlock = 16 << 20

// Reader decodes frames from one or more pcapng sections held in memory.
// It accepts either byte order, any timestamp resolution and offset, and
// skips block types it does not know, so it reads pcapng written by other
// tools too. Interfaces whose name is not Tapline's get Encap none and VNI 0.
type Reader struct {
	b      []byte
	off    int
	order  binary.ByteOrder
	ifaces []readIface
	// notVerbatim: a block of another type was skipped, or a section
	// header's length field does not match its section (see Verbatim).
	notVerbatim bool
	secStart    int   // offset of the current section's first block after its header
	secLen      int64 // its declared length; -1: not given
}

type readIface struct {
	iface  Iface
	scale  float64 // ns per timestamp unit
	exp10  int64   // ns per unit when the resolution is a power of ten (fast path), else 0
	offset int64   // if_tsoffset in seconds
}

// NewReader returns a Reader over b, which must start with a Section
// Header Block.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Next decodes the next frame into f. f.Data aliases the input. It returns
// io.EOF after the last frame and an error wrapping ErrFormat for malformed
// input.
func (r *Reader) Next(f *Frame) error {
	for {
		if r.off == len(r.b) {
			if r.order == nil {
				return fmt.Errorf("%w: empty input", ErrFormat)
			}
			r.endSection()
			return io.EOF
		}
		if len(r.b)-r.off < 12 {
			return fmt.Errorf("%w: %d trailing bytes at offset %d", ErrFormat, len(r.b)-r.off, r.off)
		}
		hdr := r.b[r.off:]
		typ := binary.LittleEndian.Uint32(hdr[0:4])
		if typ == blockSHB {
			if err := r.readSHB(hdr); err != nil {
				return err
			}
			continue
		}
		if r.order == nil {
			return fmt.Errorf("%w: input does not start with a section header", ErrFormat)
		}
		typ = r.order.Uint32(hdr[0:4])
		length := int(r.order.Uint32(hdr[4:8]))
		if length < 12 || length%4 != 0 || length > MaxBlock || length > len(hdr) {
			return fmt.Errorf("%w: block length %d at offset %d", ErrFormat, length, r.off)
		}
		if int(r.order.Uint32(hdr[length-4:length])) != length {
			return fmt.Errorf("%w: block trailer mismatch at offset %d", ErrFormat, r.off)
		}
		body := hdr[8 : length-4]
		r.off += length
		switch typ {
		case blockIDB:
			if err := r.readIDB(body); err != nil {
				return err
			}
		case blockEPB:
			return r.readEPB(body, f)
		case blockSPB:
			return r.readSPB(body, f)
		default:
			r.notVerbatim = true
		}
	}
}

// Verbatim reports, once Next has returned io.EOF, whether the input held
// nothing but section headers, interface descriptions and packet blocks,
// every section header giving its section's true length (or none): bytes
// that can be copied as they are wherever the frames they decode to would
// be written again, without carrying blocks the Reader skipped.
func (r *Reader) Verbatim() bool { return r.off == len(r.b) && r.order != nil && !r.notVerbatim }

// endSection checks the declared length of the section that ends at r.off.
func (r *Reader) endSection() {
	if r.order != nil && r.secLen != -1 && r.secLen != int64(r.off-r.secStart) {
		r.notVerbatim = true
	}
}

func (r *Reader) readSHB(hdr []byte) error {
	if len(hdr) < 28 {
		return fmt.Errorf("%w: short section header at offset %d", ErrFormat, r.off)
	}
	r.endSection() // of the section before (none for the first)
	switch binary.LittleEndian.Uint32(hdr[8:12]) {
	case byteOrderMagic:
		r.order = binary.LittleEndian
	case 0x4D3C2B1A:
		r.order = binary.BigEndian
	default:
		return fmt.Errorf("%w: bad byte-order magic at offset %d", ErrFormat, r.off)
	}
	length := int(r.order.Uint32(hdr[4:8]))
	if length < 28 || length%4 != 0 || length > MaxBlock || length > len(hdr) {
		return fmt.Errorf("%w: section header length %d at offset %d", ErrFormat, length, r.off)
	}
	if major := r.order.Uint16(hdr[12:14]); major != 1 {
		return fmt.Errorf("%w: unsupported pcapng major version %d", ErrFormat, major)
	}
	r.ifaces = r.ifaces[:0]
	r.secLen = int64(r.order.Uint64(hdr[16:24]))
	r.off += length
	r.secStart = r.off
	return nil
}

func (r *Reader) readIDB(body []byte) error {
	if len(body) < 8 {
		return fmt.Errorf("%w: short interface block", ErrFormat)
	}
	ri := readIface{scale: 1000, exp10: 1000} // default resolution: microseconds
	ri.iface.Link = flow.LinkType(r.order.Uint16(body[0:2]))
	err := r.options(body[8:], func(code uint16, v []byte) error {
		switch code {
		case optIfName:
			if i, err := ParseIfaceName(string(v)); err == nil {
				i.Link = ri.iface.Link
				ri.iface = i
			}
		case optIfTsresol:
			if len(v) < 1 {
				return fmt.Errorf("%w: empty if_tsresol", ErrFormat)
			}
			ri.scale, ri.exp10 = tsScale(v[0])
		case 14: // if_tsoffset
			if len(v) >= 8 {
				ri.offset = int64(r.order.Uint64(v[:8]))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.ifaces = append(r.ifaces, ri)
	return nil
}

// tsScale converts an if_tsresol byte into nanoseconds per unit.
func tsScale(res byte) (float64, int64) {
	if res&0x80 != 0 {
		return 1e9 / math.Pow(2, float64(res&0x7f)), 0
	}
	e := int(res)
	if e > 9 {
		return 1e9 / math.Pow(10, float64(e)), 0
	}
	ns := int64(1)
	for i := e; i < 9; i++ {
		ns *= 10
	}
	return float64(ns), ns
}

func (r *Reader) readEPB(body []byte, f *Frame) error {
	if len(body) < 20 {
		return fmt.Errorf("%w: short packet block", ErrFormat)
	}
	id := r.order.Uint32(body[0:4])
	if int(id) >= len(r.ifaces) {
		return fmt.Errorf("%w: packet names interface %d of %d", ErrFormat, id, len(r.ifaces))
	}
	ri := &r.ifaces[id]
	ts := uint64(r.order.Uint32(body[4:8]))<<32 | uint64(r.order.Uint32(body[8:12]))
	capLen := int(r.order.Uint32(body[12:16]))
	origLen := int(r.order.Uint32(body[16:20]))
	if capLen > len(body)-20 {
		return fmt.Errorf("%w: captured length %d exceeds block", ErrFormat, capLen)
	}
	r.fill(f, ri, ts, body[20:20+capLen], origLen)
	return nil
}

func (r *Reader) readSPB(body []byte, f *Frame) error {
	if len(body) < 4 || len(r.ifaces) == 0 {
		return fmt.Errorf("%w: bad simple packet block", ErrFormat)
	}
	origLen := int(r.order.Uint32(body[0:4]))
	capLen := min(origLen, len(body)-4)
	r.fill(f, &r.ifaces[0], 0, body[4:4+capLen], origLen)
	return nil
}

func (r *Reader) fill(f *Frame, ri *readIface, ts uint64, data []byte, origLen int) {
	f.Encap, f.VNI, f.OuterSrc, f.Link = ri.iface.Encap, ri.iface.VNI, ri.iface.OuterSrc, ri.iface.Link
	if ri.exp10 != 0 {
		f.TimeNs = int64(ts) * ri.exp10
	} else {
		f.TimeNs = int64(float64(ts) * ri.scale)
	}
	f.TimeNs += ri.offset * 1e9
	f.Data = data
	f.OrigLen = max(origLen, len(data))
}

// options walks a pcapng option list, calling fn for each option.
func (r *Reader) options(b []byte, fn func(code uint16, v []byte) error) error {
	for len(b) >= 4 {
		code := r.order.Uint16(b[0:2])
		n := int(r.order.Uint16(b[2:4]))
		if code == optEnd {
			return nil
		}
		padded := (n + 3) &^ 3
		if 4+padded > len(b) {
			return fmt.Errorf("%w: option %d overruns its block", ErrFormat, code)
		}
		if err := fn(code, b[4:4+n]); err != nil {
			return err
		}
		b = b[4+padded:]
	}
	return nil
}
