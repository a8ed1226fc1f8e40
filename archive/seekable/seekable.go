// Package seekable writes and reads the Zstandard seekable format: a series
// of independent zstd frames followed by a seek table in a skippable frame
// (facebook/zstd contrib/seekable_format/zstd_seekable_compression_format.md).
//
// A seekable object is an ordinary zstd stream: `zstd -d` decompresses it
// whole and ignores the seek table. A reader that knows the compressed offset
// and size of a frame (from the seek table, or from an index kept beside the
// object) fetches and decompresses that frame alone.
package seekable

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

// Format constants of the seekable format.
const (
	// SkippableMagic is the magic number of the skippable frame holding the
	// seek table (the first of the 16 skippable magics, 0x184D2A5E).
	SkippableMagic = 0x184D2A5E
	// SeekableMagic ends the seek table footer.
	SeekableMagic = 0x8F92EAB1
	// FooterSize is the size of the seek table footer: number of frames (4),
	// descriptor (1), seekable magic (4).
	FooterSize = 9
	// MaxFrames bounds the number of frames a seek table may declare.
	MaxFrames = 1 << 24
	// MaxFrameSize bounds the decompressed size of one frame the Decoder
	// accepts (the format's limit is 1 GiB; Tapline writes about 1 MiB).
	MaxFrameSize = 64 << 20
)

// ErrFormat wraps every error about malformed seekable input.
var ErrFormat = errors.New("seekable: malformed input")

// Entry is one frame of the seek table.
type Entry struct {
	// CompressedSize is the frame's size in the object.
	CompressedSize uint32
	// DecompressedSize is the size of the frame's content.
	DecompressedSize uint32
	// Checksum is the low 32 bits of the XXH64 (seed 0) of the content.
	Checksum uint32
}

// Encoder compresses frames. It is not safe for concurrent use.
type Encoder struct {
	enc *zstd.Encoder
}

// NewEncoder returns an Encoder compressing at the given level.
func NewEncoder(level zstd.EncoderLevel) (*Encoder, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), // the seek table carries the checksum
		zstd.WithSingleSegment(true),
	)
	if err != nil {
		return nil, err
	}
	return &Encoder{enc: enc}, nil
}

// AppendFrame compresses src as one independent zstd frame appended to dst
// and returns the extended dst and the frame's seek table entry.
func (e *Encoder) AppendFrame(dst, src []byte) ([]byte, Entry) {
	start := len(dst)
	dst = e.enc.EncodeAll(src, dst)
	return dst, Entry{
		CompressedSize:   uint32(len(dst) - start),
		DecompressedSize: uint32(len(src)),
		Checksum:         uint32(xxhash.Sum64(src)),
	}
}

// SeekTableSize is the size in bytes of the seek table frame for n frames
// (with checksums).
func SeekTableSize(n int) int { return 8 + 12*n + FooterSize }

// AppendSeekTable appends the seek table skippable frame describing entries
// (with checksums) to dst.
func AppendSeekTable(dst []byte, entries []Entry) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, SkippableMagic)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(12*len(entries)+FooterSize))
	for _, e := range entries {
		dst = binary.LittleEndian.AppendUint32(dst, e.CompressedSize)
		dst = binary.LittleEndian.AppendUint32(dst, e.DecompressedSize)
		dst = binary.LittleEndian.AppendUint32(dst, e.Checksum)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(entries)))
	dst = append(dst, 0x80) // Checksum_Flag set, reserved bits zero
	dst = binary.LittleEndian.AppendUint32(dst, SeekableMagic)
	return dst
}

// Footer is the parsed seek table footer.
type Footer struct {
	Frames   int
	Checksum bool
}

// TableSize is the size of the whole seek table frame the footer ends.
func (f Footer) TableSize() int {
	es := 8
	if f.Checksum {
		es = 12
	}
	return 8 + es*f.Frames + FooterSize
}

// ParseFooter reads the footer from the last FooterSize bytes of tail.
func ParseFooter(tail []byte) (Footer, error) {
	if len(tail) < FooterSize {
		return Footer{}, fmt.Errorf("%w: %d bytes is shorter than the seek table footer", ErrFormat, len(tail))
	}
	ft := tail[len(tail)-FooterSize:]
	if binary.LittleEndian.Uint32(ft[5:9]) != SeekableMagic {
		return Footer{}, fmt.Errorf("%w: no seekable magic at the end", ErrFormat)
	}
	desc := ft[4]
	if desc&0x7c != 0 {
		return Footer{}, fmt.Errorf("%w: reserved descriptor bits set (%#x)", ErrFormat, desc)
	}
	n := binary.LittleEndian.Uint32(ft[0:4])
	if n > MaxFrames {
		return Footer{}, fmt.Errorf("%w: %d frames exceeds the limit", ErrFormat, n)
	}
	return Footer{Frames: int(n), Checksum: desc&0x80 != 0}, nil
}

// ParseSeekTable reads the seek table at the end of b, which must hold at
// least the whole seek table frame (typically the whole object, or its last
// Footer.TableSize() bytes).
func ParseSeekTable(b []byte) ([]Entry, error) {
	f, err := ParseFooter(b)
	if err != nil {
		return nil, err
	}
	size := f.TableSize()
	if len(b) < size {
		return nil, fmt.Errorf("%w: seek table of %d bytes but only %d available", ErrFormat, size, len(b))
	}
	t := b[len(b)-size:]
	if binary.LittleEndian.Uint32(t[0:4]) != SkippableMagic {
		return nil, fmt.Errorf("%w: seek table does not start with the skippable magic", ErrFormat)
	}
	if int(binary.LittleEndian.Uint32(t[4:8])) != size-8 {
		return nil, fmt.Errorf("%w: seek table frame size mismatch", ErrFormat)
	}
	es := 8
	if f.Checksum {
		es = 12
	}
	entries := make([]Entry, f.Frames)
	p := t[8:]
	for i := range entries {
		entries[i].CompressedSize = binary.LittleEndian.Uint32(p[0:4])
		entries[i].DecompressedSize = binary.LittleEndian.Uint32(p[4:8])
		if f.Checksum {
			entries[i].Checksum = binary.LittleEndian.Uint32(p[8:12])
		}
		p = p[es:]
	}
	return entries, nil
}

// Decoder decompresses single frames. It is not safe for concurrent use.
type Decoder struct {
	dec *zstd.Decoder
}

// NewDecoder returns a Decoder that refuses frames larger than MaxFrameSize.
func NewDecoder() (*Decoder, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(MaxFrameSize),
		zstd.WithDecoderMaxWindow(MaxFrameSize),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		return nil, err
	}
	return &Decoder{dec: dec}, nil
}

// Close releases the decoder.
func (d *Decoder) Close() { d.dec.Close() }

// DecodeFrame decompresses one frame (exactly e.CompressedSize bytes of src)
// appended to dst and checks its size and, when check is set, its checksum.
func (d *Decoder) DecodeFrame(dst, src []byte, e Entry, check bool) ([]byte, error) {
	if len(src) != int(e.CompressedSize) {
		return dst, fmt.Errorf("%w: frame of %d bytes, seek table says %d", ErrFormat, len(src), e.CompressedSize)
	}
	if e.DecompressedSize > MaxFrameSize {
		return dst, fmt.Errorf("%w: frame of %d bytes exceeds the limit", ErrFormat, e.DecompressedSize)
	}
	start := len(dst)
	if cap(dst)-start < int(e.DecompressedSize) {
		nd := make([]byte, start, start+int(e.DecompressedSize))
		copy(nd, dst)
		dst = nd
	}
	out, err := d.dec.DecodeAll(src, dst)
	if err != nil {
		return dst, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if len(out)-start != int(e.DecompressedSize) {
		return out[:start], fmt.Errorf("%w: frame decompressed to %d bytes, seek table says %d", ErrFormat, len(out)-start, e.DecompressedSize)
	}
	if check && uint32(xxhash.Sum64(out[start:])) != e.Checksum {
		return out[:start], fmt.Errorf("%w: frame checksum mismatch", ErrFormat)
	}
	return out, nil
}

// DecodeAll decompresses a whole seekable object using its seek table and
// verifies every frame. It is meant for tests and tools; queries fetch
// single frames.
func (d *Decoder) DecodeAll(obj []byte) ([]byte, error) {
	entries, err := ParseSeekTable(obj)
	if err != nil {
		return nil, err
	}
	f, _ := ParseFooter(obj)
	body := obj[:len(obj)-f.TableSize()]
	var out []byte
	off := 0
	for i, e := range entries {
		end := off + int(e.CompressedSize)
		if end > len(body) || end < off {
			return nil, fmt.Errorf("%w: frame %d runs past the end", ErrFormat, i)
		}
		if out, err = d.DecodeFrame(out, body[off:end], e, f.Checksum); err != nil {
			return nil, fmt.Errorf("frame %d: %w", i, err)
		}
		off = end
	}
	if off != len(body) {
		return nil, fmt.Errorf("%w: %d bytes between the last frame and the seek table", ErrFormat, len(body)-off)
	}
	return out, nil
}
