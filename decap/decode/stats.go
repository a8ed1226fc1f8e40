package decode

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto/framebatch"
)

// Counters are the per-(VNI, encapsulation) counts of accepted frames.
type Counters struct {
	Packets     atomic.Uint64 // frames decoded and handed on
	Bytes       atomic.Uint64 // inner frame bytes (captured)
	Truncated   atomic.Uint64 // inner IP total length > captured bytes
	BadChecksum atomic.Uint64 // inner IPv4 header or TCP/UDP checksum wrong (kept)
	Reserved    atomic.Uint64 // encapsulation header with reserved bits set (kept)
}

// Kind says what a reason counter counts.
type Kind uint8

// Kinds of reason counters.
const (
	// KindMalformed: dropped, the outer or encapsulation header is unusable.
	KindMalformed Kind = iota
	// KindInnerMalformed: kept, but the inner frame's IP headers are broken
	// (no flow: published on shard 0).
	KindInnerMalformed
	// KindFiltered: dropped by the VNI or outer source filter.
	KindFiltered
)

type statKey struct {
	vni   uint32
	encap framebatch.Encap
}

type reasonKey struct {
	kind   Kind
	vni    int64 // -1: unknown
	encap  framebatch.Encap
	reason string
}

// MaxVNIs is how many distinct VNIs Stats counts separately; counts of
// further VNIs go to OtherVNI (label vni="other"), so memory and metric
// cardinality stay bounded whatever VNIs arrive. Only frames handed on
// (For, Admit) take a VNI slot: reason counts (Count) of a VNI that has
// none are labelled "other", so malformed or refused input cannot use up
// the slots.
const MaxVNIs = 4096

// OtherVNI stands for every VNI beyond the first MaxVNIs (outside the
// 24-bit VNI range).
const OtherVNI = 1 << 24

// Stats holds the decoders' counters. It is safe for concurrent use by many
// Decoders and implements prometheus.Collector.
type Stats struct {
	mu      sync.Mutex
	per     map[statKey]*Counters
	reasons map[reasonKey]*atomic.Uint64
	vnis    map[uint32]struct{}
	// admitted are the VNIs Admit let in (a subset of vnis).
	admitted map[uint32]struct{}
}

// NewStats returns empty counters.
func NewStats() *Stats {
	return &Stats{per: map[statKey]*Counters{}, reasons: map[reasonKey]*atomic.Uint64{}, vnis: map[uint32]struct{}{}, admitted: map[uint32]struct{}{}}
}

// Admit reports whether frames of vni may be handed on when at most max
// distinct VNIs are tracked: true for the first max VNIs Admit is asked
// about (and ever after for them), false for every other VNI. Admitted
// VNIs are counted under their own label (max is at most MaxVNIs for that
// to hold); refusals do not take a slot.
func (s *Stats) Admit(vni uint32, max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.admitted[vni]; ok {
		return true
	}
	if len(s.admitted) >= max {
		return false
	}
	s.admitted[vni] = struct{}{}
	if len(s.vnis) < MaxVNIs {
		s.vnis[vni] = struct{}{}
	}
	return true
}

// Admitted returns how many VNIs Admit let in.
func (s *Stats) Admitted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.admitted)
}

// vniLocked maps a VNI to itself while fewer than MaxVNIs are tracked,
// else to OtherVNI. s.mu is held.
func (s *Stats) vniLocked(vni uint32) uint32 {
	if _, ok := s.vnis[vni]; ok {
		return vni
	}
	if len(s.vnis) >= MaxVNIs {
		return OtherVNI
	}
	s.vnis[vni] = struct{}{}
	return vni
}

func vniLabel(vni uint32) string {
	if vni == OtherVNI {
		return "other"
	}
	return strconv.FormatUint(uint64(vni), 10)
}

// For returns the counters of one VNI and encapsulation, creating them.
func (s *Stats) For(vni uint32, encap framebatch.Encap) *Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := statKey{s.vniLocked(vni), encap}
	c := s.per[k]
	if c == nil {
		c = &Counters{}
		s.per[k] = c
	}
	return c
}

// Count adds one to a reason counter. vni < 0 means the VNI is unknown.
func (s *Stats) Count(kind Kind, vni int64, encap framebatch.Encap, reason string) {
	s.mu.Lock()
	if vni >= 0 && vni != OtherVNI {
		if _, ok := s.vnis[uint32(vni)]; !ok {
			vni = OtherVNI // reasons never take a VNI slot: only frames handed on do
		}
	}
	k := reasonKey{kind, vni, encap, reason}
	c := s.reasons[k]
	if c == nil {
		c = &atomic.Uint64{}
		s.reasons[k] = c
	}
	s.mu.Unlock()
	c.Add(1)
}

// Totals is a summary of Stats over all VNIs, for tests and logs.
type Totals struct {
	Packets, Bytes, Truncated, BadChecksum, Reserved uint64
	// Per-reason sums, keyed by reason.
	Malformed, InnerMalformed, Filtered map[string]uint64
	// PacketsByVNI counts packets per "encap/vni".
	PacketsByVNI map[string]uint64
}

// Totals sums the counters.
func (s *Stats) Totals() Totals {
	t := Totals{Malformed: map[string]uint64{}, InnerMalformed: map[string]uint64{}, Filtered: map[string]uint64{}, PacketsByVNI: map[string]uint64{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.per {
		n := c.Packets.Load()
		t.Packets += n
		t.Bytes += c.Bytes.Load()
		t.Truncated += c.Truncated.Load()
		t.BadChecksum += c.BadChecksum.Load()
		t.Reserved += c.Reserved.Load()
		if n > 0 {
			t.PacketsByVNI[k.encap.String()+"/"+vniLabel(k.vni)] += n
		}
	}
	for k, c := range s.reasons {
		m := t.Malformed
		switch k.kind {
		case KindInnerMalformed:
			m = t.InnerMalformed
		case KindFiltered:
			m = t.Filtered
		}
		m[k.reason] += c.Load()
	}
	return t
}

var (
	descPackets   = prometheus.NewDesc("tapline_decap_packets_total", "Inner frames decoded and published, per VNI and encapsulation.", []string{"vni", "encap"}, nil)
	descBytes     = prometheus.NewDesc("tapline_decap_bytes_total", "Inner frame bytes decoded, per VNI and encapsulation.", []string{"vni", "encap"}, nil)
	descTruncated = prometheus.NewDesc("tapline_decap_truncated_total", "Inner packets truncated by the mirror (IP total length > captured bytes); kept.", []string{"vni", "encap"}, nil)
	descBadSum    = prometheus.NewDesc("tapline_decap_bad_checksum_total", "Inner packets with a wrong IPv4 header or TCP/UDP checksum; kept, never dropped.", []string{"vni", "encap"}, nil)
	descReserved  = prometheus.NewDesc("tapline_decap_reserved_bits_total", "VXLAN/GENEVE headers with reserved bits set; accepted.", []string{"vni", "encap"}, nil)
	descMalformed = prometheus.NewDesc("tapline_decap_malformed_total", "Datagrams or captured frames dropped because the outer or encapsulation header is unusable, by reason (vni empty when unknown).", []string{"vni", "encap", "reason"}, nil)
	descInnerBad  = prometheus.NewDesc("tapline_decap_inner_malformed_total", "Inner frames with broken IP headers, kept and published on shard 0, by reason.", []string{"vni", "encap", "reason"}, nil)
	descFiltered  = prometheus.NewDesc("tapline_decap_filtered_total", "Datagrams dropped by the --vni or --allow-src filter or beyond --max-vnis (reasons vni, src, vni_cap).", []string{"vni", "encap", "reason"}, nil)
)

// Describe implements prometheus.Collector.
func (s *Stats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descBytes, descTruncated, descBadSum, descReserved, descMalformed, descInnerBad, descFiltered} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Stats) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.per {
		vni, enc := vniLabel(k.vni), k.encap.String()
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(c.Packets.Load()), vni, enc)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(c.Bytes.Load()), vni, enc)
		ch <- prometheus.MustNewConstMetric(descTruncated, prometheus.CounterValue, float64(c.Truncated.Load()), vni, enc)
		ch <- prometheus.MustNewConstMetric(descBadSum, prometheus.CounterValue, float64(c.BadChecksum.Load()), vni, enc)
		ch <- prometheus.MustNewConstMetric(descReserved, prometheus.CounterValue, float64(c.Reserved.Load()), vni, enc)
	}
	for k, c := range s.reasons {
		vni := ""
		if k.vni >= 0 {
			vni = vniLabel(uint32(k.vni))
		}
		d := descMalformed
		switch k.kind {
		case KindInnerMalformed:
			d = descInnerBad
		case KindFiltered:
			d = descFiltered
		}
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(c.Load()), vni, k.encap.String(), k.reason)
	}
}
