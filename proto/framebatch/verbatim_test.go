package framebatch

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// verbatim reads b to the end and returns Reader.Verbatim.
func verbatim(t *testing.T, b []byte) bool {
	t.Helper()
	r := NewReader(b)
	for {
		var f Frame
		if err := r.Next(&f); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			return r.Verbatim()
		}
	}
}

func TestVerbatim(t *testing.T) {
	var w Writer
	in := sampleFrames()
	var two []byte
	for i := range in {
		w.Reset()
		w.Add(&in[i])
		two = append(two, w.Bytes()...)
	}
	if !verbatim(t, two) {
		t.Error("sections written by Writer are not verbatim")
	}
	// A section length of -1 (not given) is fine.
	unknown := append([]byte(nil), two...)
	binary.LittleEndian.PutUint64(unknown[16:24], ^uint64(0))
	if !verbatim(t, unknown) {
		t.Error("a section without a length is not verbatim")
	}
	// A wrong section length is not: a reader skipping sections by it
	// would lose or misread frames.
	wrong := append([]byte(nil), two...)
	binary.LittleEndian.PutUint64(wrong[16:24], 12)
	if verbatim(t, wrong) {
		t.Error("a section with a wrong length is verbatim")
	}
	// An unknown block (a custom block, type 0x00000BAD) is skipped by
	// Next and makes the bytes not verbatim.
	w.Reset()
	w.Add(&in[0])
	sec := append([]byte(nil), w.Bytes()...)
	blk := []byte{0xad, 0x0b, 0, 0, 16, 0, 0, 0, 1, 2, 3, 4, 16, 0, 0, 0}
	odd := append(append([]byte(nil), sec...), blk...)
	binary.LittleEndian.PutUint64(odd[16:24], binary.LittleEndian.Uint64(odd[16:24])+uint64(len(blk)))
	if verbatim(t, odd) {
		t.Error("a section with a skipped block is verbatim")
	}
	if !verbatim(t, sec) {
		t.Error("the same section without the block is not verbatim")
	}
}
