package shard

import (
	"net/netip"
	"testing"

	"github.com/tapline/tapline/proto/flow"
)

func TestSymmetricAndFragments(t *testing.T) {
	s := New(16, 4)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	c2s := flow.Key{Src: a, Dst: b, SrcPort: 40000, DstPort: 80, Proto: flow.ProtoTCP}
	s2c := flow.Key{Src: b, Dst: a, SrcPort: 80, DstPort: 40000, Proto: flow.ProtoTCP}
	if s.Shard(&c2s, true) != s.Shard(&s2c, true) {
		t.Fatal("directions differ")
	}
	if s.Shard(&c2s, false) != 0 {
		t.Fatal("no flow must be shard 0")
	}
	// Find a 5-tuple whose shard differs from its port-less hash's.
	var first flow.Key
	for p := uint16(1); ; p++ {
		first = flow.Key{Src: a, Dst: b, SrcPort: p, DstPort: 53, Proto: flow.ProtoUDP, Fragment: true, FragID: 7}
		if flow.Shard(first.FiveTupleHash(), 16) != flow.Shard(first.Hash(), 16) {
			break
		}
	}
	want := flow.Shard(first.FiveTupleHash(), 16)
	later := flow.Key{Src: a, Dst: b, Proto: flow.ProtoUDP, Fragment: true, FragID: 7, FragOffset: 1480}
	if got := s.Shard(&later, true); got == want || s.Early.Load() != 1 {
		t.Fatalf("early fragment: shard %d early %d", got, s.Early.Load())
	}
	if got := s.Shard(&first, true); got != want {
		t.Fatalf("first fragment: %d want %d", got, want)
	}
	if got := s.Shard(&later, true); got != want {
		t.Fatalf("later fragment: %d want %d", got, want)
	}
	// The table is bounded: 4 more datagrams evict the first.
	for id := uint32(100); id < 104; id++ {
		k := first
		k.FragID = id
		s.Shard(&k, true)
	}
	if len(s.table) != 4 {
		t.Fatalf("table size %d", len(s.table))
	}
	if s.Shard(&later, true); s.Early.Load() != 2 {
		t.Fatal("evicted datagram should count as early")
	}
}
