package archive

import "sync"

// group is the batches of one chunk: acknowledged together once the chunk
// is stored.
type group struct {
	replies []string
	seqs    []uint64
	bytes   int64
}

// tracker knows every batch received and not yet acknowledged: it bounds
// memory (bytes and count), sends progress acks so JetStream does not
// redeliver batches still being archived, and recognises a redelivered
// batch that is already in a chunk of this process.
type tracker struct {
	mu      sync.Mutex
	groups  map[*group]struct{}
	seqs    map[uint64]*group
	bytes   int64
	batches int
	changed chan struct{}
}

func newTracker() *tracker {
	return &tracker{groups: map[*group]struct{}{}, seqs: map[uint64]*group{}, changed: make(chan struct{}, 1)}
}

// add records batch seq of n bytes in g. It returns false when the batch is
// already pending (a redelivery); its new reply subject is then remembered
// so that acknowledging covers this delivery too.
func (t *tracker) add(g *group, seq uint64, reply string, n int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.seqs[seq]; ok {
		old.replies = append(old.replies, reply)
		return false
	}
	t.groups[g] = struct{}{}
	t.seqs[seq] = g
	g.replies = append(g.replies, reply)
	g.seqs = append(g.seqs, seq)
	g.bytes += int64(n)
	t.bytes += int64(n)
	t.batches++
	return true
}

// done forgets g's batches (acknowledged, or given up) and returns its
// reply subjects.
func (t *tracker) done(g *group) []string {
	t.mu.Lock()
	if _, ok := t.groups[g]; !ok {
		t.mu.Unlock()
		return nil
	}
	delete(t.groups, g)
	for _, s := range g.seqs {
		if t.seqs[s] == g {
			delete(t.seqs, s)
		}
	}
	t.bytes -= g.bytes
	t.batches -= len(g.seqs)
	replies := g.replies
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
	return replies
}

// load returns the pending bytes and batches.
func (t *tracker) load() (int64, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bytes, t.batches
}

// replies returns every pending reply subject (for progress acks).
func (t *tracker) replies() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for g := range t.groups {
		out = append(out, g.replies...)
	}
	return out
}
