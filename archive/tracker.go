package archive

import "sync"

// pmsg is one batch (stream message) received and not yet acknowledged.
// Its frames may be split over several chunks (one per VNI and hour); it
// is acknowledged when the last of them is stored.
type pmsg struct {
	seq     uint64
	replies []string // every delivery's reply subject
	parts   int      // chunks holding part of it, not yet stored
	bytes   int64
	failed  bool // a part was given up: never acknowledge, let it be redelivered
}

// group is the batches (or parts of batches) of one chunk.
type group struct {
	msgs []*pmsg
}

// tracker knows every batch received and not yet acknowledged: it bounds
// memory (bytes and count), sends progress acks so JetStream does not
// redeliver batches still being archived, and recognises a redelivered
// batch that is already in a chunk of this process.
type tracker struct {
	mu      sync.Mutex
	seqs    map[uint64]*pmsg
	bytes   int64
	changed chan struct{}
	// Recently acknowledged sequences (a ring), so a stale redelivery of a
	// batch this process already stored (it waited in the client's
	// prefetch buffer past the ack wait) is acknowledged, not archived
	// again.
	acked map[uint64]struct{}
	ring  []uint64
	pos   int
}

func newTracker(remember int) *tracker {
	return &tracker{seqs: map[uint64]*pmsg{}, changed: make(chan struct{}, 1),
		acked: make(map[uint64]struct{}, remember), ring: make([]uint64, remember)}
}

// Outcomes of begin for a batch already seen.
type seen int

const (
	fresh         seen = iota // new: archive it
	pending                   // held by this process: its reply is remembered
	storedAlready             // stored and acknowledged recently: ack again
)

// begin records the delivery of batch seq of n bytes. For a batch already
// pending (a redelivery while this process holds it) the new reply subject
// is remembered so acknowledging covers it too.
func (t *tracker) begin(seq uint64, reply string, n int) (*pmsg, seen) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.seqs[seq]; ok {
		old.replies = append(old.replies, reply)
		return nil, pending
	}
	if _, ok := t.acked[seq]; ok {
		return nil, storedAlready
	}
	m := &pmsg{seq: seq, replies: []string{reply}, bytes: int64(n)}
	t.seqs[seq] = m
	t.bytes += m.bytes
	return m, fresh
}

// attach adds (part of) m to g.
func (t *tracker) attach(g *group, m *pmsg) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m.parts++
	g.msgs = append(g.msgs, m)
}

// finish releases a batch that was begun but put in no chunk.
func (t *tracker) finish(m *pmsg) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if m.parts > 0 {
		return nil
	}
	return t.releaseLocked(m)
}

func (t *tracker) releaseLocked(m *pmsg) []string {
	delete(t.seqs, m.seq)
	t.bytes -= m.bytes
	t.notify()
	if m.failed {
		return nil
	}
	if len(t.ring) > 0 {
		delete(t.acked, t.ring[t.pos])
		t.ring[t.pos] = m.seq
		t.acked[m.seq] = struct{}{}
		t.pos = (t.pos + 1) % len(t.ring)
	}
	return m.replies
}

// done marks g stored (ok) or given up (!ok). It returns the reply
// subjects of the batches now wholly stored, to acknowledge, and how many
// batches they are.
func (t *tracker) done(g *group, ok bool) ([]string, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	n := 0
	for _, m := range g.msgs {
		if !ok {
			m.failed = true
		}
		m.parts--
		if m.parts == 0 {
			if r := t.releaseLocked(m); r != nil {
				out = append(out, r...)
				n++
			}
		}
	}
	g.msgs = nil
	return out, n
}

func (t *tracker) notify() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// load returns the pending bytes and batches.
func (t *tracker) load() (int64, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bytes, len(t.seqs)
}

// replies returns every pending reply subject (for progress acks).
func (t *tracker) replies() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, m := range t.seqs {
		out = append(out, m.replies...)
	}
	return out
}
