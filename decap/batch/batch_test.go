package batch

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
)

func TestSizeDelayAndOrder(t *testing.T) {
	var out []*Batch
	b := New(Config{MaxBytes: 4096, Delay: time.Hour}, func(x *Batch) { out = append(out, x) })
	data := make([]byte, 1000)
	for i := 0; i < 10; i++ {
		data[0] = byte(i)
		b.Add(&framebatch.Frame{TimeNs: int64(i), VNI: 7, Data: data}, 3)
		b.Add(&framebatch.Frame{TimeNs: int64(i), VNI: 8, Data: data}, 3)
	}
	// 1000-byte frames in 4 KiB batches: 3 per batch, handed on by size.
	if len(out) != 6 {
		t.Fatalf("%d batches by size, want 6", len(out))
	}
	b.FlushOlder(time.Now()) // nothing is an hour old
	if len(out) != 6 {
		t.Fatal("flushed before the delay")
	}
	b.FlushOlder(time.Now().Add(2 * time.Hour))
	if len(out) != 8 {
		t.Fatalf("%d batches after the delay, want 8", len(out))
	}
	next := map[string]int64{}
	for _, x := range out {
		if x.Subject != proto.FramesSubject(x.VNI, 3) || x.W.Len() > 4096 {
			t.Fatalf("batch %s of %d bytes", x.Subject, x.W.Len())
		}
		r := framebatch.NewReader(x.W.Bytes())
		var f framebatch.Frame
		for {
			err := r.Next(&f)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.TimeNs != next[x.Subject] || f.Data[0] != byte(f.TimeNs) || f.VNI != x.VNI {
				t.Fatalf("%s: frame %d out of order (want %d)", x.Subject, f.TimeNs, next[x.Subject])
			}
			next[x.Subject]++
		}
		b.Release(x)
	}
	if next[proto.FramesSubject(7, 3)] != 10 || next[proto.FramesSubject(8, 3)] != 10 {
		t.Fatalf("frames %v", next)
	}
	// A frame larger than MaxBytes makes one batch of its own, whole.
	out = nil
	b.Add(&framebatch.Frame{VNI: 1, Data: make([]byte, 9000)}, 0)
	if len(out) != 1 || out[0].W.Frames() != 1 {
		t.Fatalf("jumbo frame: %d batches", len(out))
	}
	b.Add(&framebatch.Frame{VNI: 1, Data: data}, 0)
	b.Flush()
	if len(out) != 2 {
		t.Fatal("Flush")
	}
}

// TestBounded: the open list holds each subject once however often its
// batch fills, idle subjects are forgotten, and the subject table is
// bounded.
func TestBounded(t *testing.T) {
	var n int
	var b *Batcher
	b = New(Config{MaxBytes: 2048, Delay: time.Hour}, func(x *Batch) { n++; b.Release(x) })
	data := make([]byte, 1000)
	for i := 0; i < 1000; i++ {
		b.Add(&framebatch.Frame{VNI: 1, Data: data}, 0)
	}
	if len(b.open) != 1 {
		t.Fatalf("open list %d", len(b.open))
	}
	b.FlushOlder(time.Now().Add(2 * time.Hour))
	if len(b.open) != 0 || len(b.pend) != 0 {
		t.Fatalf("after the idle sweep: open %d subjects %d", len(b.open), len(b.pend))
	}
	for v := uint32(0); v < MaxSubjects+10; v++ {
		b.Add(&framebatch.Frame{VNI: v, Data: data[:10]}, 0)
	}
	if len(b.pend) > MaxSubjects {
		t.Fatalf("%d subjects", len(b.pend))
	}
	b.Flush()
	if len(b.open) != 0 {
		t.Fatal("open after Flush")
	}
}
