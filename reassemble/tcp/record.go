package tcp

import "net/netip"

// Record is what another tracker taking over the shard (a successor after
// a crash or a hand-over) needs to know of a closed connection whose
// frames it may be given again: frame batches are acknowledged only when
// no open connection has frames in them, so a batch shared with a
// connection still open at the crash comes back with the frames of one
// that had ended (or had already been continued) long before. The
// successor skips the frames already processed (up to Pos), ignores
// stragglers of a FIN/RST close as this tracker did, and continues a
// connection closed idle, evicted, memory, seq_jump or shutdown as this
// tracker would have (Halves, Client and the Handler's carry).
type Record struct {
	VNI    uint32         `json:"vni"`
	A      netip.AddrPort `json:"a"` // the 5-tuple, lower endpoint first
	B      netip.AddrPort `json:"b"`
	Conn   string         `json:"conn"`
	Pos    uint64         `json:"pos"` // the caller's position (SetPos) of its last packet
	Reason string         `json:"reason"`
	AtNs   int64          `json:"at_ns"`
	// Client and Halves are set for a close a later connection on the
	// 5-tuple continues.
	Client netip.AddrPort `json:"client,omitzero"`
	Halves []GoneHalf     `json:"halves,omitempty"`
}

// RecordOpen is the Reason of a Record of a connection still open that
// does not hold its frame batches (its owner gave up holding them): what
// a successor needs to skip its frames processed so far and continue it
// after them as a resumed connection.
const RecordOpen = "open"

// continued reports whether a later connection on the 5-tuple continues
// a connection closed for reason.
func continued(reason string) bool {
	switch reason {
	case CloseIdle, CloseEvicted, CloseMemory, CloseSeqJump, CloseShutdown, RecordOpen:
		return true
	}
	return false
}

func (r *Record) key() key {
	return key{vni: r.VNI, a: r.A.Addr(), ap: r.A.Port(), b: r.B.Addr(), bp: r.B.Port()}
}

// SetPos sets the position of the frames passed to Packet from now on: a
// number the caller increases in the order of its input (e.g. stream
// sequence and frame index), recorded as a connection's LastPos.
func (t *Tracker) SetPos(p uint64) { t.pos = p }

// Record returns what a successor needs of c, closed for reason at tsNs
// (called by the Handler in its Close), or still open (RecordOpen).
func (c *Conn) Record(reason string, tsNs int64) *Record {
	r := &Record{VNI: c.k.vni, A: netip.AddrPortFrom(c.k.a, c.k.ap), B: netip.AddrPortFrom(c.k.b, c.k.bp),
		Conn: c.ID, Pos: c.LastPos, Reason: reason, AtNs: tsNs}
	if continued(reason) {
		hs := c.goneHalves()
		r.Client, r.Halves = c.Client(), hs[:]
	}
	return r
}

// Restore takes a Record of the previous tracker of the shard: the
// packets of its 5-tuple up to r.Pos are skipped (counted in
// Stats.Skipped), stragglers after a FIN/RST close are ignored, and a
// connection that continues a close with Halves resumes it, with carry
// as its Resumed. A connection of the 5-tuple tracked already keeps its
// state.
func (t *Tracker) Restore(r *Record, carry any) {
	k := r.key()
	if r.Pos > t.skip[k] {
		t.skip[k] = r.Pos
	}
	if t.conns[k] != nil {
		return
	}
	if r.Reason == CloseFIN || r.Reason == CloseRST {
		t.tomb[k] = r.AtNs
	}
	if len(r.Halves) == 2 && t.gone[k] == nil {
		g := &gone{at: r.AtNs, client: r.Client, carry: carry}
		copy(g.halves[:], r.Halves)
		t.keepGone(k, g)
	}
}

// Awaits reports whether what r describes may still be needed: its
// 5-tuple has a resume record, a connection that continues one, or the
// connection r is of, still open.
func (t *Tracker) Awaits(r *Record) bool {
	k := r.key()
	if t.gone[k] != nil {
		return true
	}
	c := t.conns[k]
	return c != nil && (c.Resumed != nil || c.ID == r.Conn)
}

// Release forgets r's skip position: no packet up to it can come again.
func (t *Tracker) Release(r *Record) {
	k := r.key()
	if p, ok := t.skip[k]; ok && p <= r.Pos {
		delete(t.skip, k)
	}
}
