package reassemble

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// vmKB returns a field of /proc/self/status in KiB (0 when unknown).
func vmKB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkMemoryFlood runs the two floods of the memory tests with the
// budget (new: --max-memory's 32 MiB share) and without (old: no budget,
// the tracker's behaviour before --max-memory) and reports the heap after
// GC and the process's peak RSS. Run each in its own process for the RSS
// figure (scripts/bench-memflood.sh).
func BenchmarkMemoryFlood(b *testing.B) {
	const budget = 32 << 20
	for _, flood := range []string{"syn", "headers"} {
		for _, mode := range []string{"new", "old"} {
			b.Run(flood+"/"+mode, func(b *testing.B) {
				for range b.N {
					w, _ := floodWorker(b, budget, 1<<20)
					if mode == "old" {
						w.e.cfg.MaxMemory = 0
						w = newWorker(w.e, 0) // tracker without a budget
						w.pubErr = errFloodUnpublished
					}
					base := heapInuse()
					var clock int64 = 1e18
					block := []byte("GET /chat HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 60<<10))[:60<<10]
					flows := 200000
					if flood == "headers" {
						flows = 6000
					}
					for i := 0; i < flows; i++ {
						c := newSynthConn(b, floodAddr(i), "10.0.0.1:80", 7, &clock)
						f := c.frame(true, "S", nil)
						w.tr.Packet(&f)
						if flood == "headers" {
							for off := 0; off < len(block); off += 1400 {
								f := c.frame(true, "PA", block[off:min(off+1400, len(block))])
								w.tr.Packet(&f)
							}
						}
					}
					b.ReportMetric(float64(heapInuse()-base)/(1<<20), "heap-MiB")
					b.ReportMetric(float64(vmKB("VmHWM"))/1024, "peak-rss-MiB")
					b.ReportMetric(float64(w.tr.Stats.MemEvicted), "evictions")
				}
			})
		}
	}
}
