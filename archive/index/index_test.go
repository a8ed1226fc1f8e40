package index

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func sample() *Index {
	t0 := time.Date(2026, 11, 25, 14, 5, 6, 7, time.UTC).UnixNano()
	x := &Index{
		Version: Version, VNI: 7, Stream: "TAPLINE_FRAMES", FirstSeq: 10, LastSeq: 12,
		FirstNs: t0, LastNs: t0 + 1000, Packets: 5, CapturedBytes: 500, WireBytes: 600,
		UncompressedSize: 3000, CompressedSize: 1200,
		Frames: []Frame{
			{Offset: 0, Size: 600, USize: 2000, FirstNs: t0, LastNs: t0 + 500, FirstPacket: 0, Packets: 3},
			{Offset: 600, Size: 500, USize: 1000, FirstNs: t0 + 600, LastNs: t0 + 1000, FirstPacket: 3, Packets: 2},
		},
		Msgs:  [][2]uint64{{10, 2}, {12, 1}, {11, 2}},
		Flows: []Flow{{Proto: 6, Src: netip.MustParseAddr("10.0.0.1"), SrcPort: 1, Dst: netip.MustParseAddr("::1"), DstPort: 2, FirstNs: t0, LastNs: t0, Packets: 5, Bytes: 600}},
	}
	x.Chunk = ChunkKey(x.VNI, x.FirstNs, x.LastNs, x.FirstSeq, x.LastSeq)
	return x
}

func TestRoundTrip(t *testing.T) {
	x := sample()
	b, err := x.Encode()
	if err != nil {
		t.Fatal(err)
	}
	y, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if y.Chunk != x.Chunk || len(y.Frames) != 2 || y.Flows[0].Dst != x.Flows[0].Dst || y.Msgs[2] != x.Msgs[2] {
		t.Fatalf("decoded %+v", y)
	}
}

func TestKeys(t *testing.T) {
	x := sample()
	want := "vni=7/date=2026-11-25/hour=14/00000000000000000010-00000000000000000012_0506.000000007-0506.000001007.pcapng.zst"
	if x.Chunk != want {
		t.Fatalf("ChunkKey = %s, want %s", x.Chunk, want)
	}
	for _, k := range []string{x.Chunk, IndexKey(x.Chunk), "archive/prefix/" + IndexKey(x.Chunk)} {
		ki, ok := ParseKey(k)
		if !ok || ki.VNI != 7 || ki.FirstSeq != 10 || ki.LastSeq != 12 || ki.FirstNs != x.FirstNs || ki.LastNs != x.LastNs {
			t.Fatalf("ParseKey(%s) = %+v %v", k, ki, ok)
		}
	}
	for _, k := range []string{"", "x.pcapng.zst", "vni=1/date=2026-11-25/hour=14/1-2.pcapng.zst", "rejected/0001.bin"} {
		if _, ok := ParseKey(k); ok {
			t.Errorf("ParseKey(%q) accepted", k)
		}
	}
}

func TestInvalid(t *testing.T) {
	mut := map[string]func(x *Index){
		"version":        func(x *Index) { x.Version = 99 },
		"frame gap":      func(x *Index) { x.Frames[1].Offset = 601 },
		"packet sum":     func(x *Index) { x.Packets = 6 },
		"msg sum":        func(x *Index) { x.Msgs[0][1] = 3 },
		"msg twice":      func(x *Index) { x.Msgs[2][0] = 10 },
		"msg range":      func(x *Index) { x.Msgs[0][0] = 99 },
		"frame time":     func(x *Index) { x.Frames[0].FirstNs = x.FirstNs - 1 },
		"chunk suffix":   func(x *Index) { x.Chunk = "x" },
		"compressed":     func(x *Index) { x.CompressedSize = 10 },
		"inverted times": func(x *Index) { x.FirstNs = x.LastNs + 1 },
	}
	for name, m := range mut {
		x := sample()
		m(x)
		b, _ := x.Encode()
		if _, err := Decode(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := sample().Encode()
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"chunk":"a.pcapng.zst","msgs":[[1,0]],"frames":[{"size":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error not ErrFormat: %v", err)
			}
			return
		}
		// A valid index is self-consistent: the frames tile the object.
		var off, pk int64
		for _, fr := range x.Frames {
			if fr.Offset != off || fr.FirstPacket != pk {
				t.Fatal("frames do not tile")
			}
			off += fr.Size
			pk += fr.Packets
		}
		if pk != x.Packets || off > x.CompressedSize {
			t.Fatal("totals")
		}
		if _, err := x.Encode(); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	f.Add(sample().Chunk)
	f.Add(IndexKey(sample().Chunk))
	f.Fuzz(func(t *testing.T, k string) {
		ki, ok := ParseKey(k)
		if ok && (ki.FirstSeq > ki.LastSeq || ki.FirstNs > ki.LastNs) {
			t.Fatal("inconsistent key info accepted")
		}
	})
}
