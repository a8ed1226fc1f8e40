package keys

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// FuzzReader feeds arbitrary bytes, cut in arbitrary places, through the
// line splitter: every batch holds only accepted key lines, each ending in
// "\n", within the batch bound, and the lines are those of the input.
func FuzzReader(f *testing.F) {
	f.Add([]byte(keyLine("z", 0)+keyLine("z", 1)), uint8(7))
	f.Add([]byte("garbage\n"+keyLine("z", 2)+"# c\n\x00\x00"+keyLine("z", 3)[:40]), uint8(3))
	f.Add(bytes.Repeat([]byte("A"), 5000), uint8(200))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		cfg := DefaultConfig()
		cfg.Source = "s"
		cfg.BatchBytes = 1024
		ch := make(chan *batch, 1<<16)
		r := newReader(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics(prometheus.NewRegistry()), ch)
		kf := &keyFile{name: "fuzz", ident: "fuzz"}
		ctx := context.Background()
		step := int(cut) + 1
		for i := 0; i < len(data); i += step {
			if err := r.consume(ctx, kf, data[i:min(i+step, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.finish(ctx, kf); err != nil {
			t.Fatal(err)
		}
		close(ch)
		var want [][]byte
		for _, l := range bytes.SplitAfter(data, []byte("\n")) {
			l = bytes.TrimLeft(l, "\x00")
			l = bytes.TrimSuffix(bytes.TrimSuffix(l, []byte("\n")), []byte("\r"))
			if CheckLine(l) == LineKey {
				want = append(want, append(l, '\n'))
			}
		}
		var got [][]byte
		for b := range ch {
			if len(b.data) > cfg.BatchBytes+MaxLineLen+1 {
				t.Fatalf("batch of %d bytes", len(b.data))
			}
			lines := bytes.SplitAfter(b.data, []byte("\n"))
			if len(lines[len(lines)-1]) != 0 {
				t.Fatalf("batch does not end in a newline")
			}
			lines = lines[:len(lines)-1]
			if len(lines) != b.lines {
				t.Fatalf("batch says %d lines, holds %d", b.lines, len(lines))
			}
			got = append(got, lines...)
		}
		if len(got) != len(want) {
			t.Fatalf("%d lines out, want %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("line %d differs", i)
			}
		}
	})
}
