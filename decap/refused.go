package decap

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"
)

// refusedEvery is how often at most refusedLog warns.
const refusedEvery = 10 * time.Second

// refusedLog warns, at most once per refusedEvery, that datagrams from an
// outer source outside the allow list were dropped, naming the source and
// the flag that admits it. Every refusal is counted by decode's Stats
// (tapline_decap_filtered_total{reason="src"}) whether logged or not.
type refusedLog struct {
	log  *slog.Logger
	next atomic.Int64 // unix ns before which no warning is logged
	n    atomic.Uint64
}

// note is decode.Config.Refused.
func (r *refusedLog) note(src netip.Addr) {
	r.n.Add(1)
	now := time.Now().UnixNano()
	next := r.next.Load()
	if now < next || r.log == nil || !r.next.CompareAndSwap(next, now+int64(refusedEvery)) {
		return
	}
	n := r.n.Swap(0)
	r.log.Warn("dropping VXLAN/GENEVE from an outer source not in the allow list (counted in tapline_decap_filtered_total{reason=\"src\"})",
		"src", src.String(), "dropped_since_last_warning", n,
		"fix", "if this is a mirror source, add it: --allow-src "+netip.PrefixFrom(src, src.BitLen()).String()+",... (TAPLINE_ALLOW_SRC), or --allow-any-source")
}
