package reassemble

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tcp"
)

// memSlack is what the heap may hold beyond --max-memory's share in the
// flood tests: memory the budget does not charge by design — the
// connection map's buckets sized for the peak, the tracker's queues,
// the metrics' label sets, span fragmentation of freed connections and
// the test's own frame being built.
const memSlack = 16 << 20

// floodWorker returns a shard worker with the real decoder whose
// publishes are dropped (the close events are counted by the metrics,
// which conn.Close updates right after publishing its event).
func floodWorker(t testing.TB, maxMemory int64, maxConns int) (*worker, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("nats://127.0.0.1:1", 1, "mem")
	cfg.MaxMemory = maxMemory
	cfg.MaxConnections = maxConns
	cfg.MaxHeldBatches = 0
	cfg.NewDecoder = message.New
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e := &engine{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: m, newDecoder: message.New,
		limits: message.Limits{MaxHeader: cfg.MaxHeader, MaxControl: 125, MaxMessage: cfg.MaxMessage}}
	w := newWorker(e, 0)
	w.pubErr = errFloodUnpublished
	return w, reg
}

// errFloodUnpublished stands for a failed publish: the flood workers
// publish nothing.
var errFloodUnpublished = errors.New("flood test: not published")

// heapInuse returns the heap in use after a collection.
func heapInuse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// floodAddr returns the client address of flow i.
func floodAddr(i int) string {
	return fmt.Sprintf("10.%d.%d.%d:%d", 1+i>>16&0xff, i>>8&0xff, i&0xff, 1024+i%50000)
}

// feedFlood passes one frame to the worker's tracker and checks the budget.
func feedFlood(t *testing.T, w *worker, f framebatch.Frame, budget int64) {
	w.tr.Packet(&f)
	if m := w.tr.Memory(); m > budget {
		t.Fatalf("tracker charges %d bytes, budget %d", m, budget)
	}
}

// checkFlood checks the heap bound and that every memory eviction was
// reported as a close with reason memory.
func checkFlood(t *testing.T, w *worker, reg *prometheus.Registry, base, budget int64, flows int) {
	t.Helper()
	heap := heapInuse() - base
	st := w.tr.Stats
	closed := int64(metricValue(t, reg, "tapline_reassemble_connections_closed_total", map[string]string{"reason": tcp.CloseMemory}))
	t.Logf("flows %d, open %d, memory evictions %d (closes reported %d), charged %d, heap growth %d MiB, budget %d MiB",
		flows, w.tr.Conns(), st.MemEvicted, closed, w.tr.Memory(), heap>>20, budget>>20)
	if st.MemEvicted == 0 || closed != st.MemEvicted {
		t.Fatalf("memory evictions %d, close events with reason memory %d", st.MemEvicted, closed)
	}
	if int64(w.tr.Conns())+st.MemEvicted != int64(flows) {
		t.Fatalf("open %d + evicted %d != flows %d", w.tr.Conns(), st.MemEvicted, flows)
	}
	if heap > budget+memSlack {
		t.Fatalf("heap grew by %d bytes under the flood, budget %d + slack %d", heap, budget, memSlack)
	}
}

// TestMemoryFloodSYN: 200,000 SYN-only flows keep the shard within its
// --max-memory share (connection table entries charged ConnCost each);
// the least recently active are closed with reason memory.
func TestMemoryFloodSYN(t *testing.T) {
	const flows, budget = 200000, 32 << 20
	w, reg := floodWorker(t, budget, 1<<20)
	base := heapInuse()
	var clock int64 = 1e18
	for i := 0; i < flows; i++ {
		c := newSynthConn(t, floodAddr(i), "10.0.0.1:80", 7, &clock)
		feedFlood(t, w, c.frame(true, "S", nil), budget)
	}
	checkFlood(t, w, reg, base, budget, flows)
	runtime.KeepAlive(w)
}

// TestMemoryFloodHeaders: 6,000 connections each holding an unfinished
// 60 KB HTTP header block: the header buffers are charged and the shard
// stays within its share.
func TestMemoryFloodHeaders(t *testing.T) {
	const flows, budget, hdr, seg = 6000, 32 << 20, 60 << 10, 1400
	w, reg := floodWorker(t, budget, 1<<20)
	block := []byte("GET /chat HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", hdr))[:hdr]
	base := heapInuse()
	var clock int64 = 1e18
	for i := 0; i < flows; i++ {
		c := newSynthConn(t, floodAddr(i), "10.0.0.1:80", 7, &clock)
		feedFlood(t, w, c.frame(true, "S", nil), budget)
		for off := 0; off < len(block); off += seg {
			feedFlood(t, w, c.frame(true, "PA", block[off:min(off+seg, len(block))]), budget)
		}
	}
	checkFlood(t, w, reg, base, budget, flows)
	runtime.KeepAlive(w)
}

// TestConnCost checks that ConnCost covers the heap one SYN-only
// connection really takes (tracker entry, conn, decoder).
func TestConnCost(t *testing.T) {
	const n = 20000
	w, _ := floodWorker(t, 1<<40, 1<<20)
	var clock int64 = 1e18
	frames := make([]framebatch.Frame, n)
	for i := range frames {
		frames[i] = newSynthConn(t, floodAddr(i), "10.0.0.1:80", 7, &clock).frame(true, "S", nil)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := int64(ms.HeapAlloc)
	for i := range frames {
		w.tr.Packet(&frames[i])
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := (int64(ms.HeapAlloc) - before) / n
	runtime.KeepAlive(frames)
	t.Logf("one SYN-only connection: %d bytes (ConnCost %d)", per, ConnCost)
	if w.tr.Conns() != n {
		t.Fatalf("%d connections open, want %d", w.tr.Conns(), n)
	}
	if per > ConnCost {
		t.Fatalf("a connection takes %d bytes, ConnCost is %d", per, ConnCost)
	}
}
