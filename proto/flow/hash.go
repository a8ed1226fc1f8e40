package flow

// FNV-1a 64-bit parameters.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// Hash is the symmetric flow hash: FNV-1a (64 bit) over the canonical form
// of the flow, so both directions hash alike. The canonical form is the
// lower endpoint first, then the higher one, then the protocol byte, where an
// endpoint is its address in 16-byte form (IPv4 as ::ffff:a.b.c.d) followed
// by its port as two big-endian bytes, and "lower" compares those 18 bytes.
//
// Fragments: the ports are taken as zero whenever the packet is a fragment,
// including the first one, so all fragments of a datagram share a hash; decap
// keeps fragmented datagrams on the shard of their flow by remembering the
// first fragment (see decap's README).
func (k *Key) Hash() uint64 {
	sp, dp := k.SrcPort, k.DstPort
	if k.Fragment {
		sp, dp = 0, 0
	}
	a := endpoint(k.Src.As16(), sp)
	b := endpoint(k.Dst.As16(), dp)
	if less(b, a) {
		a, b = b, a
	}
	h := uint64(fnvOffset)
	for _, c := range a {
		h = (h ^ uint64(c)) * fnvPrime
	}
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	h = (h ^ uint64(k.Proto)) * fnvPrime
	return h
}

// FiveTupleHash is Hash computed as if the packet were not a fragment: the
// hash of the flow's full 5-tuple. decap uses it for a first fragment, whose
// ports are known, and remembers the shard for the later fragments.
func (k *Key) FiveTupleHash() uint64 {
	c := *k
	c.Fragment = false
	return c.Hash()
}

// Shard maps a hash onto one of n shards.
func Shard(hash uint64, n int) int {
	if n <= 1 {
		return 0
	}
	return int(hash % uint64(n))
}

func endpoint(addr [16]byte, port uint16) [18]byte {
	var e [18]byte
	copy(e[:16], addr[:])
	e[16] = byte(port >> 8)
	e[17] = byte(port)
	return e
}

func less(a, b [18]byte) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
