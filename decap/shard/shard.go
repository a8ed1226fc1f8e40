// Package shard assigns decoded frames to shards: the symmetric flow hash of
// the inner 5-tuple mod N (proto/flow), so both directions of a connection
// share a shard, with the fragment rule of the wire contract: every
// fragment of an IP datagram goes to the shard of the datagram's full
// 5-tuple, learned from its first fragment in a bounded table keyed by
// (source, destination, protocol, IP id). A non-first fragment that arrives
// before its first fragment uses the port-less hash and is counted.
package shard

import (
	"sync"
	"sync/atomic"

	"github.com/tapline/tapline/proto/flow"
)

// DefaultFragTable is the default number of fragmented datagrams remembered.
const DefaultFragTable = 16384

type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    uint8
}

// Sharder maps flows to shards. It is safe for concurrent use; only
// fragments take its lock.
type Sharder struct {
	n int

	mu    sync.Mutex
	table map[fragKey]int
	ring  []fragKey // insertion order, for eviction
	next  int

	// Early counts non-first fragments seen before their first fragment
	// (routed by the port-less hash).
	Early atomic.Uint64
	// Fragments counts fragments seen.
	Fragments atomic.Uint64
}

// New returns a Sharder over n shards remembering up to tableSize
// fragmented datagrams (DefaultFragTable when <= 0).
func New(n, tableSize int) *Sharder {
	if tableSize <= 0 {
		tableSize = DefaultFragTable
	}
	if n < 1 {
		n = 1
	}
	return &Sharder{n: n, table: make(map[fragKey]int, tableSize), ring: make([]fragKey, tableSize)}
}

// Shards is the number of shards.
func (s *Sharder) Shards() int { return s.n }

// Shard returns the shard of a frame with flow k; hasFlow false (not IP)
// gives shard 0.
func (s *Sharder) Shard(k *flow.Key, hasFlow bool) int {
	if !hasFlow {
		return 0
	}
	if !k.Fragment {
		return flow.Shard(k.Hash(), s.n)
	}
	s.Fragments.Add(1)
	fk := fragKey{src: k.Src.As16(), dst: k.Dst.As16(), id: k.FragID, proto: k.Proto}
	if k.FragOffset == 0 {
		sh := flow.Shard(k.FiveTupleHash(), s.n)
		s.mu.Lock()
		if _, ok := s.table[fk]; !ok {
			if old := s.ring[s.next]; old != (fragKey{}) {
				delete(s.table, old)
			}
			s.ring[s.next] = fk
			s.next = (s.next + 1) % len(s.ring)
		}
		s.table[fk] = sh
		s.mu.Unlock()
		return sh
	}
	s.mu.Lock()
	sh, ok := s.table[fk]
	s.mu.Unlock()
	if ok {
		return sh
	}
	s.Early.Add(1)
	return flow.Shard(k.Hash(), s.n)
}
