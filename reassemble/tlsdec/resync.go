package tlsdec

import "encoding/binary"

// Finding the record boundary after a loss. Record headers are plaintext,
// but when one was lost the next one must be found in the bytes after
// the gap: every position that looks like a header of a complete record
// is a candidate, verified by authenticating the record (AEAD tag or
// HMAC) under the plausible epochs and sequence numbers. Nothing is passed
// on from a candidate that does not authenticate.

// maxTrials bounds the sequence numbers tried per candidate and epoch.
const maxTrials = 512

// trialResult is a candidate that authenticated.
type trialResult struct {
	lvl, gen int
	seq      uint64
	o        opener
	secret   []byte
	p        []byte
	typ      byte
	same     bool // in the current epoch
}

// seqOrder returns sequence numbers from lo to hi (at most maxTrials),
// nearest to est first.
func seqOrder(lo, hi, est uint64) []uint64 {
	if hi < lo {
		hi = lo
	}
	if hi-lo >= maxTrials {
		if est < lo+maxTrials/2 {
			hi = lo + maxTrials - 1
		} else {
			lo = est - maxTrials/2
			hi = lo + maxTrials - 1
		}
	}
	est = min(max(est, lo), hi)
	out := make([]uint64, 0, hi-lo+1)
	out = append(out, est)
	for d := uint64(1); est >= lo+d || est+d <= hi; d++ {
		if est+d <= hi {
			out = append(out, est+d)
		}
		if est >= lo+d {
			out = append(out, est-d)
		}
	}
	return out
}

// trial authenticates one candidate record lost bytes after the end of
// the last record processed.
func (h *half) trial(hdr, body []byte, lost int64) (trialResult, bool) {
	c := h.c
	minRec := int64(5 + h.overhead())
	if minRec < 21 {
		minRec = 21
	}
	avg := h.avgRec
	if avg < float64(minRec) {
		avg = 16384 + float64(minRec)
	}
	k := uint64(lost/minRec) + 1
	dst := h.buf(len(body))
	try := func(lvl, gen int, o opener, secret []byte, seqs []uint64, same bool) (trialResult, bool) {
		for _, s := range seqs {
			if p, typ, err := o.open(dst, hdr, body, s); err == nil {
				return trialResult{lvl, gen, s, o, secret, p, typ, same}, true
			}
		}
		return trialResult{}, false
	}
	est := uint64(float64(lost)/avg + 0.5)
	if !c.tls13() && c.suite.cipher == cipherAESGCM && len(body) >= 8 {
		// Senders use the sequence number as the explicit nonce.
		est = binary.BigEndian.Uint64(body[:8])
	}
	if h.enc && h.op != nil {
		e := est
		if c.tls13() || c.suite.cipher != cipherAESGCM {
			e = h.seq + est
		}
		if r, ok := try(h.lvl, h.gen, h.op, h.secret, seqOrder(h.seq, h.seq+k, e), true); ok {
			return r, true
		}
	}
	var epochs [][2]int
	if h.enc {
		epochs = h.next()
	} else if c.tls13() {
		epochs = [][2]int{{h.firstLevel(), 0}, {lvlHS, 0}, {lvlApp, 0}, {lvlApp, 1}}
	} else {
		epochs = [][2]int{{lvlApp, 0}}
	}
	k2 := min(k, 64)
	for _, e := range epochs {
		o, s := h.epoch(e[0], e[1])
		if o == nil {
			continue
		}
		if r, ok := try(e[0], e[1], o, s, seqOrder(0, k2, min(est, k2)), false); ok {
			return r, true
		}
	}
	return trialResult{}, false
}

// accept makes a candidate that authenticated the current state and
// reports the loss before it (lost ciphertext bytes).
func (h *half) accept(r trialResult, lost int64) {
	h.flushLost()
	minRec := int64(5 + h.overhead())
	var recs int64
	if r.same {
		recs = int64(r.seq - h.seq)
	} else {
		recs = lost/int64(max(h.avgRec, float64(minRec))) + 1
	}
	h.stats.RecordsLost += recs
	keyUpdateLost := !r.same && h.enc && h.lvl == lvlApp && r.lvl == lvlApp && r.gen == h.gen+1 && lost == 5+keyUpdateRecord
	if !h.enc {
		h.enc = true
	}
	if !r.same {
		h.setEpoch(r.lvl, r.gen, r.o, r.secret)
	}
	h.seq = r.seq + 1
	h.hsbuf = h.hsbuf[:0]
	if n := lost - recs*minRec; n > 0 && !keyUpdateLost {
		// (exactly one KeyUpdate record lost before the next key
		// generation: no application data)
		if r.same {
			h.loseRecs(n, recs, ReasonGap)
		} else {
			// The record count is estimated: the estimate is no bound.
			h.loseUnknown(n, ReasonGap)
		}
	}
	h.content(r.p, r.typ)
}

// search handles a record whose epoch and sequence number are not
// known (records before it were given up undecrypted).
func (h *half) search(it *item, lost int64) bool {
	r, ok := h.trial(it.hdr[:], it.body, lost)
	if !ok {
		return false
	}
	if !r.same {
		h.setEpoch(r.lvl, r.gen, r.o, r.secret)
	}
	h.seq = r.seq + 1
	h.content(r.p, r.typ)
	return true
}

// searchResync looks for the next record boundary in rbuf (the queue's
// head is the resync marker and the keys are there). It reports whether
// the marker was resolved.
func (h *half) searchResync() bool {
	c := h.c
	if c.failed != "" {
		h.pop()
		h.resync = false
		h.rlost += int64(len(h.rbuf))
		h.rbuf, h.rpos = nil, 0
		return true
	}
	b := h.rbuf
	for ; h.rpos+5 <= len(b); h.rpos++ {
		i := h.rpos
		hd := b[i : i+5]
		if !validHeader(hd) || (c.sh != nil && hd[1] != 3) {
			continue
		}
		n := hdrLen(hd)
		if n < 17 && !(hd[0] == recordCCS && n == 1) {
			continue
		}
		if i+5+n > len(b) {
			h.compact()
			return false // wait for the rest of this candidate
		}
		lost := h.rlost + int64(i)
		if hd[0] == recordCCS && !h.enc && !c.tls13() {
			if b[i+5] != 1 {
				continue
			}
			h.finishResync(i, lost, false)
			return true
		}
		if hd[0] != recordAppData && c.tls13() {
			continue
		}
		if r, ok := h.trial(hd, b[i+5:i+5+n], lost); ok {
			rest := h.finishResync(i+5+n, lost, true)
			h.accept(r, lost)
			h.feed(rest)
			return true
		}
	}
	h.compact()
	return false
}

// finishResync ends the search at rbuf[i]; with consumed, the record there
// was used by the search and the rest after it is returned to be parsed,
// otherwise parsing restarts at i.
func (h *half) finishResync(i int, lost int64, consumed bool) []byte {
	h.pop()
	h.stats.Resyncs++
	h.resync = false
	rest := append([]byte(nil), h.rbuf[i:]...)
	h.rbuf, h.rpos, h.rlost = nil, 0, 0
	if consumed {
		return rest
	}
	if lost > 0 {
		h.stats.RecordsLost++
	}
	h.feed(rest)
	return nil
}

// compact drops the bytes of rbuf already ruled out (counted as lost).
func (h *half) compact() {
	if h.rpos > 4096 && h.rpos > len(h.rbuf)/2 {
		h.rlost += int64(h.rpos)
		h.rbuf = append(h.rbuf[:0], h.rbuf[h.rpos:]...)
		h.rpos = 0
	}
}
