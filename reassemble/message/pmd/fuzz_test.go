package pmd

import (
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/flate"
)

// writers are reused across fuzz iterations (a compressor is expensive to
// allocate).
var writers [10]*flate.Writer

// compress deflates msg as permessage-deflate does with a fresh
// compressor.
func compress(t testing.TB, msg []byte, level int) []byte {
	var b bytes.Buffer
	w := writers[level]
	if w == nil {
		var err error
		if w, err = flate.NewWriter(&b, level); err != nil {
			t.Fatal(err)
		}
		writers[level] = w
	}
	w.Reset(&b)
	w.Write(msg)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// inflateAll is the reference: the whole message at once.
func inflateAll(msg []byte) ([]byte, error) {
	r := flate.NewReader(io.MultiReader(bytes.NewReader(msg), bytes.NewReader(tail)))
	return io.ReadAll(r)
}

// feedSplit inflates msg through an Inflater, split at the given step.
func feedSplit(f *Inflater, msg []byte, step int) ([]byte, error) {
	var out []byte
	emit := func(p []byte) { out = append(out, p...) }
	f.Begin()
	for len(msg) > 0 {
		n := min(step, len(msg))
		if err := f.Write(msg[:n], emit); err != nil {
			return out, err
		}
		msg = msg[n:]
	}
	return out, f.End(emit)
}

func FuzzInflate(f *testing.F) {
	f.Add([]byte("hello hello hello hello"), []byte(nil), uint16(3), uint8(5))
	f.Add(bytes.Repeat([]byte{0}, 70000), []byte(nil), uint16(1000), uint8(1))
	f.Add([]byte("x"), []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, uint16(1), uint8(0))
	f.Add([]byte{}, []byte{0xff, 0xff, 0xff}, uint16(2), uint8(9))
	f.Fuzz(func(t *testing.T, plain, raw []byte, step uint16, level uint8) {
		st := int(step)%4096 + 1
		if len(plain) > 64<<10 {
			plain = plain[:64<<10]
		}
		if len(raw) > 64<<10 {
			raw = raw[:64<<10]
		}
		// A real compressed message always inflates to exactly its text.
		msg := compress(t, plain, int(level%10))
		got, err := feedSplit(NewInflater(TakeoverOn, 15), msg, st)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("round trip: err %v, %d bytes, want %d", err, len(got), len(plain))
		}
		// Arbitrary bytes: streaming never disagrees with the reference and
		// never reports success where the reference fails.
		ref, refErr := inflateAll(raw)
		got, err = feedSplit(NewInflater(TakeoverOff, 15), raw, st)
		if err == nil && (refErr != nil || !bytes.Equal(got, ref)) {
			t.Fatalf("streaming accepted what the reference did not (ref err %v)", refErr)
		}
		if !bytes.HasPrefix(ref, got) && refErr == nil {
			t.Fatalf("streaming output is not a prefix of the reference")
		}
	})
}
