package vxlan

import (
	"bytes"
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	frame := []byte{1, 2, 3}
	b := append(Append(nil, 5569041), frame...)
	h, inner, err := Parse(b)
	if err != nil || h.VNI != 5569041 || h.Reserved || h.Flags != FlagI || !bytes.Equal(inner, frame) {
		t.Fatalf("got %+v %x %v", h, inner, err)
	}
	// Suricata's crafted packet: flags 0xff, reserved 01 d1 f2, VNI 11.
	h, _, err = Parse([]byte{0xff, 0x01, 0xd1, 0xf2, 0, 0, 0x0b, 0})
	if err != nil || h.VNI != 11 || !h.Reserved {
		t.Fatalf("reserved bits: %+v %v", h, err)
	}
	if _, _, err := Parse([]byte{0, 0, 0, 0, 0, 0, 1, 0}); !errors.Is(err, ErrFlags) {
		t.Fatalf("no I flag: %v", err)
	}
	if _, _, err := Parse([]byte{8, 0, 0}); !errors.Is(err, ErrShort) {
		t.Fatalf("short: %v", err)
	}
}

func FuzzVXLAN(f *testing.F) {
	f.Add(Append(nil, 1))
	f.Add([]byte{0xff, 0x01, 0xd1, 0xf2, 0, 0, 0x0b, 0, 0xaa})
	f.Add([]byte{0x0c, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, inner, err := Parse(b)
		if err != nil {
			return
		}
		if len(inner) != len(b)-HeaderLen || h.VNI > 0xffffff || h.Flags&FlagI == 0 {
			t.Fatalf("inconsistent %+v len %d", h, len(inner))
		}
		if !h.Reserved {
			re := append(Append(nil, h.VNI), inner...)
			if !bytes.Equal(re, b) {
				t.Fatalf("round trip %x != %x", re, b)
			}
		}
	})
}
