package archive

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tapline/tapline/archive/index"
	"github.com/tapline/tapline/archive/internal/s3test"
	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/seekable"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/framebatch"
)

// writeChunks archives frames straight through the chunk builder (as the
// stage does, without NATS): batches of perBatch frames with consecutive
// sequences from seq0, chunks rotated at chunkBytes. It returns the bytes
// stored.
func writeChunks(t testing.TB, st store.Store, in []pub, perBatch int, seq0 uint64, p chunkParams, chunkBytes int64) int64 {
	t.Helper()
	enc, err := seekable.NewEncoder(zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	var stored int64
	open := map[partKey]*chunk{}
	seal := func(c *chunk) {
		delete(open, c.key)
		s, err := c.seal(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(context.Background(), s.key, s.data); err != nil {
			t.Fatal(err)
		}
		if err := st.Put(context.Background(), s.idxKey, s.idxJSON); err != nil {
			t.Fatal(err)
		}
		stored += int64(len(s.data) + len(s.idxJSON))
	}
	seq := seq0
	batch := make([]framebatch.Frame, 0, perBatch)
	for i := 0; i < len(in); i += perBatch {
		batch = batch[:0]
		for j := i; j < min(i+perBatch, len(in)); j++ {
			batch = append(batch, in[j].f)
		}
		k := partKey{batch[0].VNI, hourOf(batch[0].TimeNs)}
		c := open[k]
		if c == nil {
			c = newChunk(p, enc, k, time.Now())
			open[k] = c
		}
		c.add(seq, batch, nil)
		seq++
		if c.usize() >= chunkBytes {
			seal(c)
		}
	}
	for _, c := range open {
		seal(c)
	}
	return stored
}

// TestQueryPruning: one minute out of an hour of data fetches only the
// frames of that minute: under 3% of the archive's bytes.
func TestQueryPruning(t *testing.T) {
	base, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	queryPruning(t, base, func() int64 { return -1 })
}

// TestQueryPruningS3 is the same against versitygw, counting the bytes of
// the HTTP responses: range GETs really fetch only the frames.
func TestQueryPruningS3(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the local-directory variant runs")
	}
	srv := s3test.Start(t)
	ct := &countingTransport{rt: http.DefaultTransport}
	base, err := store.NewS3WithClient(context.Background(), s3test.Bucket, "prune", storeS3(srv), &http.Client{Transport: ct})
	if err != nil {
		t.Fatal(err)
	}
	queryPruning(t, base, func() int64 { return ct.bytes.Load() })
}

// countingTransport counts the body bytes of HTTP responses.
type countingTransport struct {
	rt    http.RoundTripper
	bytes atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.bytes}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// queryPruning writes an hour and queries one minute; wire returns the
// bytes received over HTTP so far (-1 when not applicable).
func queryPruning(t *testing.T, base store.Store, wire func() int64) {
	n := 400_000 // about 240 MiB of pcapng over one hour
	if testing.Short() {
		n = 200_000
	}
	t0 := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC).UnixNano()
	step := int64(time.Hour) / int64(n)
	in := synth(n, t0, step, 42, 256, 1, 520)
	// Real traffic compresses far less than repetitive JSON: end every
	// payload with 64 pseudo-random bytes (a token, a TLS record …).
	rng := rand.New(rand.NewPCG(1, 2))
	for _, p := range in {
		for i := len(p.f.Data) - 64; i < len(p.f.Data); i++ {
			p.f.Data[i] = byte(rng.Uint32())
		}
	}
	total := writeChunks(t, base, in, 64, 1, newParams(DefaultFrameBytes, DefaultChunkBytes, 10000), DefaultChunkBytes)

	st := store.NewCounting(base)
	wire0 := wire()
	from := t0 + 30*int64(time.Minute)
	f := query.Filter{FromNs: from, ToNs: from + int64(time.Minute)}
	out, res := queryStore(t, st, f)
	var want []framebatch.Frame
	for _, p := range in {
		if p.f.TimeNs >= f.FromNs && p.f.TimeNs < f.ToNs {
			want = append(want, p.f)
		}
	}
	sameFrames(t, decodeAll(t, out), want)
	pct := 100 * float64(st.Bytes()) / float64(total)
	t.Logf("archive %d bytes; one-minute query fetched %d bytes in %d requests (%.2f%%), %d frames of %d chunks",
		total, st.Bytes(), st.Requests(), pct, res.Frames, res.Chunks)
	if pct >= 3 {
		t.Fatalf("one-minute query fetched %.2f%% of the archive, want < 3%%", pct)
	}
	if wire0 >= 0 {
		// Listings and headers add a little; bodies are what counts.
		w := wire() - wire0
		t.Logf("HTTP response bodies: %d bytes (%.2f%%)", w, 100*float64(w)/float64(total))
		if 100*float64(w)/float64(total) >= 3 {
			t.Fatalf("one-minute query received %d bytes over HTTP, %.2f%% of the archive", w, 100*float64(w)/float64(total))
		}
	}
}

// TestOverlappingChunksDeduplicated: two chunks holding the same batches
// (different cut points, as after a crash between store and ack) are
// merged without duplicates.
func TestOverlappingChunksDeduplicated(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC).UnixNano()
	in := synth(3000, t0, int64(time.Millisecond), 3, 8, 1, 100)
	st, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := newParams(16<<10, 64<<10, 100)
	// First run: batches 1..100 (frames 0..1599) in 64 KiB chunks.
	writeChunks(t, st, in[:1600], 16, 1, p, 64<<10)
	// Redelivery: batches 60..188 (frames 944..) with other cut points.
	writeChunks(t, st, in[59*16:], 16, 60, p, 100<<10)
	out, res := queryStore(t, st, query.Filter{})
	if res.Duplicates != 41*16 {
		t.Errorf("dropped %d duplicates, want %d", res.Duplicates, 41*16)
	}
	sameFrames(t, decodeAll(t, out), frames(in))
	// ls-level: the index lists the batches.
	chunks, _ := query.List(context.Background(), st, query.Filter{})
	for _, c := range chunks {
		if c.Index.Version != index.Version || len(c.Index.Msgs) == 0 {
			t.Fatalf("bad index %+v", c.Index)
		}
	}
}
