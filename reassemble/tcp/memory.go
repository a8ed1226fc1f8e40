package tcp

// Memory budget of a Tracker.
//
// With Config.MaxMemory set, the tracker charges every connection
// Config.ConnCost bytes (its fixed structures: table entry, Conn, the
// Handler's own state), plus the out-of-order and causally held bytes,
// plus what its Handler reports holding (Sizer: header buffers, inflater
// windows, hunt buffers, partial messages), plus every resume record
// (GoneCost and what its Carry reports). When a packet leaves the total
// above MaxMemory, the tracker first forgets the oldest resume records
// (a later continuation then decodes as a new mid-stream connection),
// then closes the least recently active connections other than the
// packet's own with reason CloseMemory, counting each in
// Stats.MemEvicted. The packet's own connection is closed only when it
// alone is over the budget.

// Sizer is implemented by a Handler (or a Carry) that holds memory whose
// size varies: Memory returns the bytes it holds now beyond its fixed
// size. It is measured after every packet of its connection.
type Sizer interface {
	Memory() int64
}

// DefaultConnCost is the fixed cost charged per connection when
// Config.ConnCost is zero: the tracker's own per-connection structures
// (map entry, Conn with both halves, LRU links). Callers whose Handler
// keeps more per connection set ConnCost to the sum.
const DefaultConnCost = 1024

// GoneCost is the fixed cost charged per resume record (a connection
// closed idle, evicted or by a jump, kept for its continuation): the
// record, its map entry and queue slot.
const GoneCost = 320

// CloseMemory: the connection was closed to keep the tracker within
// Config.MaxMemory (the least recently active first).
const CloseMemory = "memory"

// Memory returns the bytes charged against Config.MaxMemory.
func (t *Tracker) Memory() int64 {
	return int64(len(t.conns))*t.cfg.ConnCost + t.buffered + t.handlerMem + t.goneMem
}

// measure updates the charge of c's Handler.
func (t *Tracker) measure(c *Conn) {
	if c.closed {
		return
	}
	s, ok := c.h.(Sizer)
	if !ok {
		return
	}
	m := s.Memory()
	t.handlerMem += m - c.mem
	c.mem = m
}

// carryCost is the charge of a resume record.
func carryCost(g *gone) int64 {
	n := int64(GoneCost)
	if s, ok := g.carry.(Sizer); ok {
		n += s.Memory()
	}
	return n
}

// forget drops the resume record of k, if any.
func (t *Tracker) forget(k key) *gone {
	g := t.gone[k]
	if g != nil {
		t.goneMem -= g.mem
		delete(t.gone, k)
	}
	return g
}

// overBudget reports that the charge plus extra exceeds the budget.
func (t *Tracker) overBudget(extra int64) bool {
	return t.cfg.MaxMemory > 0 && t.Memory()+extra > t.cfg.MaxMemory
}

// enforce brings the charge plus extra within the budget: the oldest
// resume records are forgotten first, then the least recently active
// connections other than keep are closed (keep too when it is the only
// one left and still over).
func (t *Tracker) enforce(keep *Conn, extra int64) {
	for t.overBudget(extra) && len(t.goneQ) > 0 {
		k := t.goneQ[0]
		t.goneQ[0] = key{}
		t.goneQ = t.goneQ[1:]
		if t.forget(k) != nil {
			t.GoneDropped++
		}
	}
	for t.overBudget(extra) && t.tail != nil {
		v := t.tail
		if v == keep && v.prev != nil {
			v = v.prev // keep goes last: only when it alone is over
		}
		t.MemEvicted++
		t.close(v, CloseMemory, t.nowNs)
	}
}
