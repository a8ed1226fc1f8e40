package archive

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tapline/tapline/archive/seekable"
	"github.com/tapline/tapline/proto/framebatch"
)

// benchData is WebSocket/JSON-like traffic as decap publishes it: batches
// of 64 frames (about 40 KiB), 64 MiB of frames in all, plus the same
// frames as one pcapng stream for the baselines.
type benchData struct {
	batches     [][]byte
	frameBytes  int64
	pcapng      []byte
	frameCounts int
}

var benchCache = map[string]*benchData{}

// benchKinds are the traffic mixes: "json" is WebSocket/JSON text (very
// compressible), "tls" random payloads (incompressible, as encrypted
// traffic is).
var benchKinds = []string{"json", "tls"}

func loadBench(kind string) *benchData {
	if d := benchCache[kind]; d != nil {
		return d
	}
	rng := rand.New(rand.NewPCG(7, 7))
	t0 := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC).UnixNano()
	var d benchData
	var w framebatch.Writer
	w.App = "tapline decap"
	var all framebatch.Writer
	sizes := []int{120, 240, 480, 900, 1400, 300, 200, 640}
	for i := 0; d.frameBytes < 64<<20; i++ {
		payload := jsonPayload(i, sizes[i%len(sizes)])
		if kind == "tls" {
			for j := range payload {
				payload[j] = byte(rng.Uint32())
			}
		}
		data := synthFrame(i%512, payload)
		f := framebatch.Frame{TimeNs: t0 + int64(i)*int64(20*time.Microsecond), VNI: 5569041, Encap: framebatch.EncapVXLAN,
			Link: 1, OrigLen: len(data), Data: data}
		w.Add(&f)
		all.Add(&f)
		d.frameBytes += int64(len(data))
		d.frameCounts++
		if w.Frames() == 64 {
			d.batches = append(d.batches, append([]byte(nil), w.Bytes()...))
			w.Reset()
		}
	}
	if w.Frames() > 0 {
		d.batches = append(d.batches, append([]byte(nil), w.Bytes()...))
	}
	d.pcapng = append([]byte(nil), all.Bytes()...)
	benchCache[kind] = &d
	return &d
}

// BenchmarkArchive is the stage's per-core work on each batch: decode the
// pcapng batch, index flows and times, rewrite as pcapng sections,
// compress as seekable zstd frames, seal 64 MiB chunks with their index.
// Bytes are frame bytes.
func BenchmarkArchive(b *testing.B) {
	for _, kind := range benchKinds {
		b.Run(kind, func(b *testing.B) { benchmarkArchive(b, loadBench(kind)) })
	}
}

func benchmarkArchive(b *testing.B, d *benchData) {
	ap := newArchivePass(b)
	b.SetBytes(d.frameBytes)
	b.ResetTimer()
	var u, c int64
	for i := 0; i < b.N; i++ {
		du, dc := ap.run(b, d)
		u, c = u+du, c+dc
	}
	b.ReportMetric(float64(u)/float64(c), "ratio")
}

// archivePass is the archive's work on a whole benchData.
type archivePass struct {
	enc  *seekable.Encoder
	p    chunkParams
	frms []framebatch.Frame
	// rewrite writes every batch's frames again instead of copying the
	// batch as it is (what the archive did before copying).
	rewrite bool
}

func newArchivePass(b *testing.B) *archivePass {
	enc, err := seekable.NewEncoder(zstd.SpeedFastest)
	if err != nil {
		b.Fatal(err)
	}
	return &archivePass{enc: enc, p: newParams(DefaultFrameBytes, DefaultChunkBytes, 10000)}
}

// run archives d once and returns the uncompressed and stored bytes.
func (ap *archivePass) run(b *testing.B, d *benchData) (u, c int64) {
	enc, p, frms := ap.enc, ap.p, ap.frms
	defer func() { ap.frms = frms }()
	{
		var ch *chunk
		for seq, batch := range d.batches {
			frms = frms[:0]
			r := framebatch.NewReader(batch)
			for {
				var f framebatch.Frame
				if err := r.Next(&f); err != nil {
					if !errors.Is(err, io.EOF) {
						b.Fatal(err)
					}
					break
				}
				frms = append(frms, f)
			}
			raw := batch // as the archiver does: copied when verbatim
			if ap.rewrite || !r.Verbatim() {
				raw = nil
			}
			if ch == nil {
				ch = newChunk(p, enc, partKey{5569041, hourOf(frms[0].TimeNs)}, time.Now())
			}
			ch.add(uint64(seq+1), frms, raw)
			if ch.usize() >= DefaultChunkBytes {
				s, err := ch.seal(time.Now())
				if err != nil {
					b.Fatal(err)
				}
				u += s.idx.UncompressedSize
				c += int64(len(s.data) + len(s.idxJSON))
				ch = nil
			}
		}
		if ch != nil {
			s, err := ch.seal(time.Now())
			if err != nil {
				b.Fatal(err)
			}
			u += s.idx.UncompressedSize
			c += int64(len(s.data) + len(s.idxJSON))
			p.release(s.data) // as the uploader does once stored
		}
	}
	return u, c
}

// BenchmarkArchiveVsZstd interleaves the archive pass, the plain zstd
// baseline and the archive pass writing every batch again (the old path)
// in every iteration, so all see the same machine load (the machine is
// shared): the figure to read is vs_zstd, the archive's throughput as a
// fraction of plain zstd fastest on the same frames; rewrite_vs_zstd is
// the same for the old path.
func BenchmarkArchiveVsZstd(b *testing.B) {
	for _, kind := range benchKinds {
		b.Run(kind, func(b *testing.B) {
			d := loadBench(kind)
			ap := newArchivePass(b)
			old := newArchivePass(b)
			old.rewrite = true
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
			if err != nil {
				b.Fatal(err)
			}
			var out []byte
			var ta, tz, tr time.Duration
			var ca, cz, cr time.Duration // CPU time of this thread
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.SetBytes(3 * d.frameBytes)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c0, t0 := threadCPU(), time.Now()
				ap.run(b, d)
				c1, t1 := threadCPU(), time.Now()
				for off := 0; off < len(d.pcapng); off += 1 << 20 {
					out = enc.EncodeAll(d.pcapng[off:min(off+1<<20, len(d.pcapng))], out[:0])
				}
				c2, t2 := threadCPU(), time.Now()
				old.run(b, d)
				c3, t3 := threadCPU(), time.Now()
				ta += t1.Sub(t0)
				tz += t2.Sub(t1)
				tr += t3.Sub(t2)
				ca, cz, cr = ca+c1-c0, cz+c2-c1, cr+c3-c2
			}
			mb := float64(d.frameBytes) * float64(b.N) / 1e6
			b.ReportMetric(mb/ta.Seconds(), "archive_MB/s")
			b.ReportMetric(mb/tz.Seconds(), "zstd_MB/s")
			b.ReportMetric(tz.Seconds()/ta.Seconds(), "vs_zstd")
			b.ReportMetric(tz.Seconds()/tr.Seconds(), "rewrite_vs_zstd")
			if ca > 0 && cr > 0 {
				// The same ratios in CPU time, which a loaded machine
				// disturbs far less than wall time.
				b.ReportMetric(cz.Seconds()/ca.Seconds(), "cpu_vs_zstd")
				b.ReportMetric(cz.Seconds()/cr.Seconds(), "cpu_rewrite_vs_zstd")
			}
		})
	}
}

// threadCPU is the CPU time the calling OS thread has used (zero where
// the system cannot tell).
func threadCPU() time.Duration {
	const rusageThread = 1 // RUSAGE_THREAD (Linux)
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBaselineZstdFastest is plain zstd (fastest, one goroutine) on
// the same frames as one pcapng stream, in 1 MiB blocks. Bytes are frame
// bytes, as in BenchmarkArchive.
func BenchmarkBaselineZstdFastest(b *testing.B) {
	for _, kind := range benchKinds {
		b.Run(kind, func(b *testing.B) { benchmarkBaselineZstdFastest(b, loadBench(kind)) })
	}
}

func benchmarkBaselineZstdFastest(b *testing.B, d *benchData) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(d.frameBytes)
	b.ResetTimer()
	var out []byte
	var c int64
	for i := 0; i < b.N; i++ {
		c = 0
		for off := 0; off < len(d.pcapng); off += 1 << 20 {
			out = enc.EncodeAll(d.pcapng[off:min(off+1<<20, len(d.pcapng))], out[:0])
			c += int64(len(out))
		}
	}
	b.ReportMetric(float64(len(d.pcapng))/float64(c), "ratio")
}

// BenchmarkBaselineGzip is gzip (default level) on the same pcapng, for
// the compression ratio.
func BenchmarkBaselineGzip(b *testing.B) {
	for _, kind := range benchKinds {
		b.Run(kind, func(b *testing.B) { benchmarkBaselineGzip(b, loadBench(kind)) })
	}
}

func benchmarkBaselineGzip(b *testing.B, d *benchData) {
	b.SetBytes(d.frameBytes)
	b.ResetTimer()
	var buf bytes.Buffer
	for i := 0; i < b.N; i++ {
		buf.Reset()
		zw := gzip.NewWriter(&buf)
		zw.Write(d.pcapng)
		zw.Close()
	}
	b.ReportMetric(float64(len(d.pcapng))/float64(buf.Len()), "ratio")
}
