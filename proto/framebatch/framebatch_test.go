package framebatch

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"

	"github.com/tapline/tapline/proto/flow"
)

func sampleFrames() []Frame {
	return []Frame{
		{TimeNs: 1_700_000_000_123_456_789, VNI: 5569041, Encap: EncapVXLAN, Link: flow.LinkEthernet,
			OuterSrc: netip.MustParseAddr("172.31.0.238"), OrigLen: 60, Data: bytes.Repeat([]byte{0xab}, 60)},
		{TimeNs: 1_700_000_000_123_456_999, VNI: 7, Encap: EncapGENEVE, Link: flow.LinkRaw,
			OuterSrc: netip.MustParseAddr("2001:db8::1"), OrigLen: 9001, Data: bytes.Repeat([]byte{0x45}, 8500)},
		{TimeNs: 1_700_000_001_000_000_000, VNI: 5569041, Encap: EncapVXLAN, Link: flow.LinkEthernet,
			OuterSrc: netip.MustParseAddr("172.31.0.238"), OrigLen: 3, Data: []byte{1, 2, 3}},
		{TimeNs: 5, Encap: EncapNone, Link: flow.LinkEthernet, Data: []byte{}},
	}
}

func TestRoundTrip(t *testing.T) {
	var w Writer
	w.App = "tapline test"
	in := sampleFrames()
	for i := range in {
		w.Add(&in[i])
	}
	if w.Frames() != len(in) {
		t.Fatalf("Frames() = %d, want %d", w.Frames(), len(in))
	}
	out := readAll(t, w.Bytes())
	if len(out) != len(in) {
		t.Fatalf("decoded %d frames, want %d", len(out), len(in))
	}
	for i := range in {
		a, b := in[i], out[i]
		if a.TimeNs != b.TimeNs || a.VNI != b.VNI || a.Encap != b.Encap || a.Link != b.Link ||
			a.OuterSrc != b.OuterSrc || a.OrigLen != b.OrigLen || !bytes.Equal(a.Data, b.Data) {
			t.Errorf("frame %d: got %+v, want %+v", i, b.Iface(), a.Iface())
		}
	}
}

func TestResetAndConcatenatedSections(t *testing.T) {
	var w Writer
	in := sampleFrames()
	var all []byte
	for i := range in {
		w.Reset()
		w.Add(&in[i])
		all = append(all, w.Bytes()...)
	}
	out := readAll(t, all)
	if len(out) != len(in) {
		t.Fatalf("decoded %d frames from %d sections, want %d", len(out), len(in), len(in))
	}
	for i := range in {
		if out[i].VNI != in[i].VNI || !bytes.Equal(out[i].Data, in[i].Data) {
			t.Errorf("section %d decoded wrong frame", i)
		}
	}
}

func TestMalformed(t *testing.T) {
	var w Writer
	f := sampleFrames()[0]
	w.Add(&f)
	good := append([]byte(nil), w.Bytes()...)
	cases := map[string][]byte{
		"empty":     {},
		"garbage":   []byte("not a pcapng file at all"),
		"truncated": good[:len(good)-3],
		"no shb":    good[28+0:],
	}
	for name, b := range cases {
		r := NewReader(b)
		var fr Frame
		var err error
		for range 10 {
			if err = r.Next(&fr); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}
}

func readAll(t testing.TB, b []byte) []Frame {
	t.Helper()
	r := NewReader(b)
	var out []Frame
	for {
		var f Frame
		err := r.Next(&f)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, f)
	}
}

func FuzzReader(f *testing.F) {
	var w Writer
	in := sampleFrames()
	for i := range in {
		w.Add(&in[i])
	}
	f.Add(append([]byte(nil), w.Bytes()...))
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(b)
		var fr Frame
		for range 1 << 16 {
			if err := r.Next(&fr); err != nil {
				if err != io.EOF && !errors.Is(err, ErrFormat) {
					t.Fatalf("unexpected error type: %v", err)
				}
				return
			}
			if len(fr.Data) > len(b) {
				t.Fatalf("frame longer than input")
			}
		}
	})
}

func BenchmarkWriter(b *testing.B) {
	f := sampleFrames()[0]
	f.Data = make([]byte, 1400)
	var w Writer
	b.SetBytes(int64(len(f.Data)))
	for i := 0; i < b.N; i++ {
		if w.Len() > 64<<10 {
			w.Reset()
		}
		w.Add(&f)
	}
}
