package wsframe

import (
	"bytes"
	"testing"
)

func FuzzFrameParser(f *testing.F) {
	f.Add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, uint8(0))
	f.Add([]byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4}, uint8(3))
	f.Add([]byte{0x02, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9}, uint8(1))
	f.Add([]byte{0x88, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0}, uint8(2))
	f.Add([]byte{0x89, 0x7e, 0x00, 0x05, 'p', 'i', 'n', 'g', '!'}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, pos uint8) {
		h, n, err := Parse(b)
		switch err {
		case ErrShort:
			if len(b) >= MaxHeader {
				t.Fatalf("short with %d bytes", len(b))
			}
			return
		case ErrLength:
			return
		case nil:
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if n != Size(b) || n > len(b) || n < 2 {
			t.Fatalf("size %d, Size %d, len %d", n, Size(b), len(b))
		}
		if !h.NonMinimal {
			if enc := Append(nil, h); !bytes.Equal(enc, b[:n]) {
				t.Fatalf("re-encoded % x, parsed % x", enc, b[:n])
			}
		}
		// MaskCopy agrees with the byte-by-byte definition at any offset.
		p := b[n:]
		got := make([]byte, len(p))
		MaskCopy(got, p, h.Key, uint64(pos))
		for i := range p {
			if got[i] != p[i]^h.Key[(int(pos)+i)&3] {
				t.Fatalf("mask byte %d", i)
			}
		}
		MaskCopy(got, got, h.Key, uint64(pos))
		if !bytes.Equal(got, p) {
			t.Fatal("masking twice is not the identity")
		}
	})
}
