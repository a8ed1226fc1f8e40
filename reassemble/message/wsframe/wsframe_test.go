package wsframe

import (
	"bytes"
	"testing"
)

func TestParseLengths(t *testing.T) {
	for _, l := range []uint64{0, 125, 126, 65535, 65536, 1 << 40} {
		for _, masked := range []bool{false, true} {
			h := Header{Fin: true, Opcode: OpBinary, Masked: masked, Length: l}
			if masked {
				h.Key = [4]byte{1, 2, 3, 4}
			}
			b := Append(nil, h)
			got, n, err := Parse(b)
			if err != nil || n != len(b) || got != h {
				t.Fatalf("len %d masked %v: %+v %d %v", l, masked, got, n, err)
			}
			for i := 0; i < len(b); i++ {
				if _, _, err := Parse(b[:i]); err != ErrShort {
					t.Fatalf("prefix %d: %v", i, err)
				}
			}
		}
	}
	if _, _, err := Parse([]byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0}); err != ErrLength {
		t.Fatalf("2^63: %v", err)
	}
	if h, _, _ := Parse([]byte{0x82, 0x7e, 0, 5}); !h.NonMinimal {
		t.Fatal("non-minimal 16-bit length not flagged")
	}
}

func TestMaskCopyOffsets(t *testing.T) {
	key := [4]byte{0xde, 0xad, 0xbe, 0xef}
	src := bytes.Repeat([]byte("0123456789abcdef"), 20)
	for pos := uint64(0); pos < 8; pos++ {
		for n := 0; n < len(src); n += 7 {
			dst := make([]byte, n)
			MaskCopy(dst, src[:n], key, pos)
			for i := 0; i < n; i++ {
				if dst[i] != src[i]^key[(pos+uint64(i))%4] {
					t.Fatalf("pos %d n %d byte %d", pos, n, i)
				}
			}
		}
	}
}

func TestCloseCodes(t *testing.T) {
	if CloseCode([]byte{0x03}) != 0 || CloseCode([]byte{0x03, 0xe8, 'x'}) != 1000 {
		t.Fatal("close code")
	}
	for code, ok := range map[int]bool{999: false, 1000: true, 1004: false, 1005: false, 1011: true, 2999: false, 3000: true, 4999: true, 5000: false} {
		if ValidCloseCode(code) != ok {
			t.Errorf("code %d", code)
		}
	}
}
