package tcp

import (
	"math"
	"net/netip"
	"time"
)

// Defaults of Config.MaxSeqJump and Config.MaxFlowRate.
const (
	// DefaultMaxSeqJump is the largest TCP window (65535 << 14, RFC 7323).
	DefaultMaxSeqJump = 1 << 30
	// DefaultMaxFlowRate is 25 Gbit/s, above the fastest single flow an
	// AWS instance sends (5 Gbit/s, 10 in a placement group, 25 with ENA
	// Express).
	DefaultMaxFlowRate = 25e9 / 8
)

// jumpSlack is the capture-time jitter allowed between two packets of a
// direction (the mirror may deliver one later than it was sent).
const jumpSlack = 2 * time.Millisecond

// rateBytes is the most a direction can send in dt nanoseconds.
func (t *Tracker) rateBytes(dt int64) int64 {
	if dt <= 0 {
		return 0
	}
	b := float64(dt) * float64(t.cfg.MaxFlowRate) / 1e9
	if b > math.MaxInt64/4 {
		return math.MaxInt64 / 4
	}
	return int64(b)
}

// window is the most half ix can have sent beyond what its receiver
// acknowledged: the receiver's largest window (65535 << its window scale
// when both SYNs were seen, RFC 7323), else Config.MaxSeqJump. A stream
// that began with a sequence jump of its 5-tuple is held to an unscaled
// window (65535): its predecessor just showed sequence numbers no TCP
// sends, so its holes are not believed beyond that (a flood of scattered
// segments is then one jump per segment, not a window of loss each).
func (c *Conn) window(t *Tracker, ix int) int64 {
	x, r := &c.halves[ix], &c.halves[ix^1]
	w := t.cfg.MaxSeqJump
	if x.afterJump {
		w = min(w, 65535)
	}
	if x.syn && r.syn {
		k := int64(65535)
		if x.wscale >= 0 && r.wscale >= 0 {
			k <<= r.wscale
		}
		w = min(w, k)
	}
	return w
}

// jump reports whether segment s, sent by half ix at capture time ts, is
// further from what the direction sent before than TCP allows — so the
// bytes between are not mirror loss but the sequence numbers of another
// stream (a reused 5-tuple whose SYN was not mirrored, a forged or broken
// packet). A sender's unacknowledged bytes never exceed its receiver's
// window W, and its sequence number advances at most at the flow's rate R:
//
//   - against the segment that reached furthest so far (start p, end e,
//     captured at t0, so the sender had not yet had p acknowledged): the
//     segment may end at most p + W + R·(ts−t0) and start at least e − W;
//   - against the direction's first packet (and its predecessors after a
//     resume): the stream may be at most W + R·(ts−origin) long.
//
// Both with jumpSlack of capture jitter. A violation is a sequence jump.
func (c *Conn) jump(t *Tracker, ix int, s *segment, ts int64) bool {
	h := &c.halves[ix]
	n := len(s.data) + s.lost
	if !h.started || n == 0 || s.flags&flagSYN != 0 {
		return false
	}
	w := c.window(t, ix)
	slack := t.rateBytes(int64(jumpSlack))
	end := s.seq + uint32(n)
	if h.refSet {
		if seqDiff(end, h.refSeq) > w+t.rateBytes(ts-h.refTs)+slack || seqDiff(h.refEnd, s.seq) > w+slack {
			return true
		}
	}
	length := h.used + h.offset + seqDiff(end, h.next)
	return length > w+t.rateBytes(ts-h.originTs)+slack
}

// reach records segment s as the one that reached furthest when it did.
func (h *half) reach(s *segment, ts int64) {
	n := len(s.data) + s.lost
	if n == 0 || s.flags&flagSYN != 0 {
		return
	}
	end := s.seq + uint32(n)
	if !h.refSet || seqDiff(end, h.refEnd) > 0 {
		h.refSet, h.refSeq, h.refEnd, h.refTs = true, s.seq, end, ts
	}
}

// gone is what is kept of a connection closed idle, evicted or by a
// sequence jump, for the connection that continues it on its 5-tuple.
type gone struct {
	at     int64
	client netip.AddrPort
	halves [2]GoneHalf // by sender address
	carry  any
	mem    int64 // its charge against MaxMemory
}

// GoneHalf is one direction's sequence state as a continuation of its
// connection needs it (kept by the tracker, and in a Record).
type GoneHalf struct {
	Addr     netip.AddrPort `json:"addr"`
	Started  bool           `json:"started,omitempty"`
	Cont     bool           `json:"cont,omitempty"`   // the stream continues at Next (false after a jump of this half)
	Jumped   bool           `json:"jumped,omitempty"` // this half's sequence jumped: its next packet starts another stream
	Next     uint32         `json:"next,omitempty"`
	SYN      bool           `json:"syn,omitempty"`
	WScale   int8           `json:"wscale,omitempty"`
	RefSet   bool           `json:"ref_set,omitempty"`
	RefSeq   uint32         `json:"ref_seq,omitempty"`
	RefEnd   uint32         `json:"ref_end,omitempty"`
	RefTs    int64          `json:"ref_ts,omitempty"`
	OriginTs int64          `json:"origin_ts,omitempty"`
	Used     int64          `json:"used,omitempty"`
}

// goneHalves is what a continuation of c needs of its two directions.
func (c *Conn) goneHalves() [2]GoneHalf {
	var hs [2]GoneHalf
	for ix := range c.halves {
		h := &c.halves[ix]
		gh := &hs[ix]
		gh.Addr = c.First
		if ix == 1 {
			gh.Addr = c.Second
		}
		gh.OriginTs, gh.Used = h.originTs, h.used+h.offset
		if c.jumpIx == ix+1 || h.afterJump {
			gh.Jumped = true
		}
		if c.jumpIx == ix+1 {
			continue // its next packet starts another stream
		}
		gh.Started, gh.Cont, gh.Next = h.started, h.started, h.next
		gh.SYN, gh.WScale = h.syn, h.wscale
		gh.RefSet, gh.RefSeq, gh.RefEnd, gh.RefTs = h.refSet, h.refSeq, h.refEnd, h.refTs
	}
	return hs
}

// bury keeps what a continuation of c needs (bounded by MaxConnections
// entries: the oldest is forgotten first).
func (t *Tracker) bury(c *Conn, tsNs int64) {
	t.keepGone(c.k, &gone{at: tsNs, client: c.Client(), carry: c.Carry, halves: c.goneHalves()})
}

// keepGone adds the resume record g of k.
func (t *Tracker) keepGone(k key, g *gone) {
	for len(t.gone) >= t.cfg.MaxConnections && len(t.goneQ) > 0 {
		k := t.goneQ[0]
		t.goneQ = t.goneQ[1:]
		t.forget(k)
	}
	if len(t.goneQ) >= 2*t.cfg.MaxConnections { // stale keys of resumed entries
		q := t.goneQ[:0]
		for _, k := range t.goneQ {
			if t.gone[k] != nil {
				q = append(q, k)
			}
		}
		clear(t.goneQ[len(q):])
		t.goneQ = q
	}
	t.forget(k)
	g.mem = carryCost(g)
	t.goneMem += g.mem
	t.gone[k] = g
	t.goneQ = append(t.goneQ, k)
}

// resume makes the new connection c (not opened by a SYN) continue g:
// the same client, and each direction's stream from where it stopped.
func (t *Tracker) resume(c *Conn, g *gone) {
	t.Resumed++
	c.Resumed = g.carry
	if g.client == c.First {
		c.clientIx = 0
	} else {
		c.clientIx = 1
	}
	for _, gh := range g.halves {
		ix := c.ix(gh.Addr)
		h := &c.halves[ix]
		h.originTs, h.used, h.afterJump = gh.OriginTs, gh.Used, gh.Jumped
		if !gh.Cont {
			continue
		}
		h.started, h.next, h.start = true, gh.Next, gh.Next
		h.resumed, h.resumeOK = true, true
		h.syn, h.wscale = gh.SYN, gh.WScale
		h.refSet, h.refSeq, h.refEnd, h.refTs = gh.RefSet, gh.RefSeq, gh.RefEnd, gh.RefTs
	}
}
