package framebatch

import (
	"encoding/binary"
)

// pcapng block types and option codes used by the writer.
const (
	blockSHB = 0x0A0D0D0A
	blockIDB = 0x00000001
	blockEPB = 0x00000006
	blockSPB = 0x00000003

	byteOrderMagic = 0x1A2B3C4D

	optEnd       = 0
	optComment   = 1
	optShbAppl   = 4
	optIfName    = 2
	optIfDescr   = 3
	optIfTsresol = 9

	// SnapLen is the snapshot length written in every interface: larger
	// than any jumbo frame, so no reader truncates.
	SnapLen = 262144
)

// Writer builds one pcapng section in memory. The zero value is ready to
// use; Reset starts a new section and keeps the buffer.
type Writer struct {
	// App is written as the section's shb_userappl option (e.g. "tapline
	// decap"). Optional.
	App string

	buf    []byte
	ifaces map[Iface]uint32
	frames int

	// The interface of the previous frame: consecutive frames usually
	// share one, which saves the map lookup.
	last    Iface
	lastID  uint32
	hasLast bool
}

// Add appends one frame. The section header and the frame's interface block
// are written first when needed.
func (w *Writer) Add(f *Frame) {
	if len(w.buf) == 0 {
		w.writeSHB()
	}
	key := f.Iface()
	id := w.lastID
	if !w.hasLast || key != w.last {
		var ok bool
		id, ok = w.ifaces[key]
		if !ok {
			id = uint32(len(w.ifaces))
			w.ifaces[key] = id
			w.writeIDB(key)
		}
		w.last, w.lastID, w.hasLast = key, id, true
	}
	w.writeEPB(id, f)
	w.frames++
}

// Len is the size in bytes of the section so far.
func (w *Writer) Len() int { return len(w.buf) }

// Frames is the number of frames added since the last Reset.
func (w *Writer) Frames() int { return w.frames }

// Bytes returns the finished section. It is valid until the next Add or
// Reset. It returns nil when no frame was added.
func (w *Writer) Bytes() []byte {
	if len(w.buf) == 0 {
		return nil
	}
	// Section length (bytes after the SHB) lets readers skip sections.
	shbLen := binary.LittleEndian.Uint32(w.buf[4:8])
	binary.LittleEndian.PutUint64(w.buf[16:24], uint64(len(w.buf)-int(shbLen)))
	return w.buf
}

// Reset discards the section and starts a new one, keeping the buffer.
func (w *Writer) Reset() {
	w.buf = w.buf[:0]
	clear(w.ifaces)
	w.frames = 0
	w.hasLast = false
}

func (w *Writer) writeSHB() {
	if w.ifaces == nil {
		w.ifaces = make(map[Iface]uint32)
	}
	start := w.beginBlock(blockSHB)
	w.u32(byteOrderMagic)
	w.u16(1) // major
	w.u16(0) // minor
	w.u64(^uint64(0))
	if w.App != "" {
		w.option(optShbAppl, []byte(w.App))
		w.option(optEnd, nil)
	}
	w.endBlock(start)
}

func (w *Writer) writeIDB(i Iface) {
	start := w.beginBlock(blockIDB)
	w.u16(uint16(i.Link))
	w.u16(0)
	w.u32(SnapLen)
	w.option(optIfName, []byte(i.Name()))
	w.option(optIfTsresol, []byte{9})
	w.option(optEnd, nil)
	w.endBlock(start)
}

func (w *Writer) writeEPB(id uint32, f *Frame) {
	start := w.beginBlock(blockEPB)
	w.u32(id)
	ts := uint64(f.TimeNs)
	w.u32(uint32(ts >> 32))
	w.u32(uint32(ts))
	w.u32(uint32(len(f.Data)))
	orig := f.OrigLen
	if orig < len(f.Data) {
		orig = len(f.Data)
	}
	w.u32(uint32(orig))
	w.buf = append(w.buf, f.Data...)
	w.pad()
	w.endBlock(start)
}

// beginBlock writes the block type and a placeholder length.
func (w *Writer) beginBlock(typ uint32) int {
	start := len(w.buf)
	w.u32(typ)
	w.u32(0)
	return start
}

// endBlock writes the trailing length and patches the leading one.
func (w *Writer) endBlock(start int) {
	total := uint32(len(w.buf) - start + 4)
	w.u32(total)
	binary.LittleEndian.PutUint32(w.buf[start+4:], total)
}

func (w *Writer) option(code uint16, v []byte) {
	w.u16(code)
	w.u16(uint16(len(v)))
	w.buf = append(w.buf, v...)
	w.pad()
}

func (w *Writer) pad() {
	for len(w.buf)%4 != 0 {
		w.buf = append(w.buf, 0)
	}
}

func (w *Writer) u16(v uint16) { w.buf = binary.LittleEndian.AppendUint16(w.buf, v) }
func (w *Writer) u32(v uint32) { w.buf = binary.LittleEndian.AppendUint32(w.buf, v) }
func (w *Writer) u64(v uint64) { w.buf = binary.LittleEndian.AppendUint64(w.buf, v) }
