package seekable

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/tapline/tapline/proto/mirrorlab"
)

func build(t testing.TB, parts ...[]byte) []byte {
	t.Helper()
	enc, err := NewEncoder(zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	var obj []byte
	var es []Entry
	for _, p := range parts {
		var e Entry
		obj, e = enc.AppendFrame(obj, p)
		es = append(es, e)
	}
	return AppendSeekTable(obj, es)
}

func TestRoundTrip(t *testing.T) {
	a := bytes.Repeat([]byte("hello seekable "), 10000)
	b := []byte{}
	c := bytes.Repeat([]byte{1, 2, 3, 4, 5}, 300000)
	obj := build(t, a, b, c)
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	all, err := d.DecodeAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{}, a...), b...), c...)
	if !bytes.Equal(all, want) {
		t.Fatal("DecodeAll mismatch")
	}
	es, err := ParseSeekTable(obj)
	if err != nil || len(es) != 3 {
		t.Fatalf("ParseSeekTable: %v %d", err, len(es))
	}
	// Random access to the third frame alone.
	off := int(es[0].CompressedSize + es[1].CompressedSize)
	got, err := d.DecodeFrame(nil, obj[off:off+int(es[2].CompressedSize)], es[2], true)
	if err != nil || !bytes.Equal(got, c) {
		t.Fatalf("DecodeFrame: %v", err)
	}
	// A corrupted checksum is caught.
	bad := es[2]
	bad.Checksum++
	if _, err := d.DecodeFrame(nil, obj[off:off+int(es[2].CompressedSize)], bad, true); !errors.Is(err, ErrFormat) {
		t.Fatalf("bad checksum: %v", err)
	}
}

// TestZstdCLI checks a plain `zstd -d` decompresses a seekable object.
func TestZstdCLI(t *testing.T) {
	bin, err := exec.LookPath("zstd")
	if err != nil {
		mirrorlab.Unavailable(t, "zstd CLI not installed")
	}
	a := bytes.Repeat([]byte("abc"), 1<<19)
	obj := build(t, a, a[:1000])
	dir := t.TempDir()
	in := filepath.Join(dir, "x.zst")
	if err := os.WriteFile(in, obj, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-d", "-c", in).Output()
	if err != nil {
		t.Fatalf("zstd -d: %v", err)
	}
	if !bytes.Equal(out, append(append([]byte{}, a...), a[:1000]...)) {
		t.Fatal("zstd -d output differs")
	}
}

func FuzzSeekable(f *testing.F) {
	f.Add(build(f, []byte("one frame")))
	f.Add(build(f, []byte("a"), []byte("bb"), []byte{}))
	f.Add(AppendSeekTable(nil, nil))
	f.Add([]byte{0xb1, 0xea, 0x92, 0x8f})
	d, err := NewDecoder()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParseSeekTable(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error not ErrFormat: %v", err)
			}
			return
		}
		ft, _ := ParseFooter(b)
		if ft.TableSize() > len(b) || len(es) != ft.Frames {
			t.Fatal("inconsistent table")
		}
		out, err := d.DecodeAll(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error not ErrFormat: %v", err)
			}
			return
		}
		total := 0
		for _, e := range es {
			total += int(e.DecompressedSize)
		}
		if len(out) != total {
			t.Fatalf("decoded %d bytes, table says %d", len(out), total)
		}
	})
}
