package ledger

import (
	"fmt"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay"
)

// dataOpcode reports whether op is a data message (what production
// applications receive); control frames are counted only in the close
// event checks.
func dataOpcode(op string) bool { return proto.DataOpcode(op) }

// item is a message or a gap of one connection direction, in stream order.
type item struct {
	msg *StreamMsg
	gap *proto.GapEvent
}

// Reconcile balances the ledger. prod is what production received; s what
// TAPLINE_MSGS holds; res what replay published on TAPLINE_RESULTS (nil
// with o.NoResults); got what the test system received, in order.
//
// Every production message is exactly one of: exact (the stream holds it
// complete and byte-identical, in order), flagged (the stream holds an
// incomplete message in its place, with Tapline-Reason), or reported lost
// (it falls in a stretch of the connection the stream reports a gap for).
// Anything else is a Violation: see the Class constants.
func Reconcile(prod []Production, s *Stream, res *Results, got []Delivery, o Options) *Report {
	if o.ReplayDir == "" {
		o.ReplayDir = proto.ServerToClient
	}
	if o.Incomplete == "" {
		o.Incomplete = "skip"
	}
	r := &Report{Figures: Figures{Flagged: map[string]int{}, Bounds: o.Bounds}}
	r.Violations = append(r.Violations, s.problems...)
	if n := s.Pending(); n > 0 {
		r.Violations = append(r.Violations, Violation{Class: ClassWire, Index: -1,
			Detail: fmt.Sprintf("%d messages have chunks but no last chunk", n)})
	}
	for _, p := range prod {
		r.account(p, s)
	}
	r.checkCloses(s)
	r.checkDelivery(prod, s, res, got, o)
	return r
}

// account matches one connection direction's production messages against
// the stream.
func (r *Report) account(p Production, s *Stream) {
	cf := ConnFigures{Key: p.Key, Dir: p.Dir, Produced: len(p.Msgs), Flagged: map[string]int{}}
	conns := map[string]bool{}
	for _, id := range s.connIDs() {
		if k, _ := s.KeyOf(id); k == p.Key {
			conns[id] = true
			cf.Conns = append(cf.Conns, id)
		}
	}
	var items []item
	// Messages and gaps in stream order (both lists are in order).
	msgs, evs := s.msgs, s.events
	for i, j := 0, 0; i < len(msgs) || j < len(evs); {
		if j == len(evs) || (i < len(msgs) && msgs[i].Pos < evs[j].pos) {
			m := &msgs[i]
			i++
			if conns[m.Conn] && m.Dir == p.Dir && dataOpcode(m.Opcode) {
				items = append(items, item{msg: m})
			}
			continue
		}
		e := evs[j]
		j++
		if e.gap != nil && conns[e.gap.Conn] && e.gap.Dir == p.Dir {
			items = append(items, item{gap: e.gap})
		}
	}
	viol := func(class string, conn string, idx int, format string, a ...any) {
		r.Violations = append(r.Violations, Violation{Class: class, Key: p.Key, Conn: conn, Dir: p.Dir, Index: idx,
			Detail: fmt.Sprintf(format, a...)})
	}
	// A TLS connection whose close event reports records of this
	// direction undecryptable (keys that never came, records that failed
	// authentication): reassemble published none of their plaintext and
	// the close event says so, so the messages missing from the stream
	// are reported, not lost silently. The report has no position in the
	// stream: it covers every stretch of the direction.
	undecryptable := s.tlsUndecryptable(conns, p.Dir)
	prev := -1 // last production index matched exactly
	var flagged []*StreamMsg
	evidence := false // a loss report in the current stretch
	// closeStretch accounts the production messages between prev and next
	// (exclusive): the stream publishes a gap event before the data that
	// follows the hole, so a loss report of the stretch lies inside it.
	closeStretch := func(next int) {
		k := next - prev - 1
		m := len(flagged)
		ev := evidence
		for i := 0; i < k && i < m; i++ {
			cf.Flagged[flagged[i].Reason]++
		}
		if k > m {
			switch {
			case ev:
				cf.Lost += k - m
			case undecryptable:
				cf.Undecryptable += k - m
			default:
				for i := prev + 1 + m; i < next; i++ {
					viol(ClassUnaccounted, "", i, "%v: not in the stream complete, not flagged, and no loss reported around it", p.Msgs[i])
				}
			}
		}
		if m > k && !ev && !undecryptable {
			for _, f := range flagged[k:] {
				viol(ClassExtraFlag, f.Conn, -1, "flagged message seq %d (%s, reason %q, %d bytes, %d missing) stands for no production message and no loss was reported (after production message %d)",
					f.Seq, f.Opcode, f.Reason, f.Size, f.Missing, prev)
			}
		}
		flagged, evidence = flagged[:0], false
	}
	for _, it := range items {
		if it.gap != nil {
			evidence = true
			continue
		}
		m := it.msg
		if !m.Complete {
			flagged = append(flagged, m)
			if m.Missing > 0 || m.Reason == proto.ReasonGap {
				evidence = true
			}
			continue
		}
		j := prev + 1
		for ; j < len(p.Msgs) && p.Msgs[j] != m.Msg(); j++ {
		}
		if j == len(p.Msgs) {
			earlier := -1
			for e := 0; e <= prev; e++ {
				if p.Msgs[e] == m.Msg() {
					earlier = e
				}
			}
			if earlier >= 0 {
				viol(ClassTwice, m.Conn, earlier, "complete again in the stream as seq %d (after production message %d)", m.Seq, prev)
			} else {
				viol(ClassNeverSent, m.Conn, -1, "seq %d reported complete (%v, %d chunks) is no message production sent after message %d",
					m.Seq, m.Msg(), m.Chunks, prev)
			}
			continue
		}
		closeStretch(j)
		prev = j
		cf.Exact++
	}
	closeStretch(len(p.Msgs))
	r.Produced += cf.Produced
	r.Exact += cf.Exact
	r.Lost += cf.Lost
	r.Undecryptable += cf.Undecryptable
	for k, v := range cf.Flagged {
		r.Flagged[k] += v
	}
	r.Conns = append(r.Conns, cf)
}

// connIDs returns every connection id the stream names, in order of first
// appearance.
func (s *Stream) connIDs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	msgs, evs := s.msgs, s.events
	for i, j := 0, 0; i < len(msgs) || j < len(evs); {
		if j == len(evs) || (i < len(msgs) && msgs[i].Pos < evs[j].pos) {
			add(msgs[i].Conn)
			i++
			continue
		}
		e := evs[j]
		j++
		switch {
		case e.open != nil:
			add(e.open.Conn)
		case e.gap != nil:
			add(e.gap.Conn)
		case e.close != nil:
			add(e.close.Conn)
		}
	}
	return out
}

// checkCloses checks each connection's close event against the stream and
// sums the loss report.
func (r *Report) checkCloses(s *Stream) {
	type dirCount struct{ complete, incomplete, control, controlIncomplete, gapBytes int64 }
	counts := map[string]*dirCount{}
	get := func(conn string, dir proto.Direction) *dirCount {
		k := conn + "/" + string(dir)
		if counts[k] == nil {
			counts[k] = &dirCount{}
		}
		return counts[k]
	}
	for _, m := range s.msgs {
		c := get(m.Conn, m.Dir)
		switch {
		case !dataOpcode(m.Opcode):
			c.control++
			if !m.Complete {
				c.controlIncomplete++
			}
		case m.Complete:
			c.complete++
		default:
			c.incomplete++
		}
	}
	for _, g := range s.Gaps() {
		get(g.Conn, g.Dir).gapBytes += g.Bytes
	}
	closes := map[string][]*proto.CloseEvent{}
	for _, c := range s.Closes() {
		closes[c.Conn] = append(closes[c.Conn], c)
	}
	for _, id := range s.connIDs() {
		key, _ := s.KeyOf(id)
		cs := closes[id]
		viol := func(dir proto.Direction, format string, a ...any) {
			r.Violations = append(r.Violations, Violation{Class: ClassClose, Key: key, Conn: id, Dir: dir, Index: -1,
				Detail: fmt.Sprintf(format, a...)})
		}
		if len(cs) == 0 {
			viol("", "no close event")
			for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
				r.BytesMissing += get(id, dir).gapBytes
			}
			continue
		}
		if len(cs) > 1 {
			viol("", "%d close events", len(cs))
		}
		c := cs[len(cs)-1]
		for _, d := range []struct {
			dir  proto.Direction
			loss proto.DirLoss
		}{{proto.ClientToServer, c.C2S}, {proto.ServerToClient, c.S2C}} {
			n := get(id, d.dir)
			l := d.loss
			// The loss report is the larger of the two accounts, so that
			// neither can over-count unseen by the bounds.
			r.BytesMissing += max(l.BytesMissing, n.gapBytes)
			if l.MessagesComplete != n.complete || l.MessagesIncomplete != n.incomplete {
				viol(d.dir, "close event counts %d complete / %d incomplete messages, the stream holds %d / %d",
					l.MessagesComplete, l.MessagesIncomplete, n.complete, n.incomplete)
			}
			if l.ControlFrames != n.control || l.ControlIncomplete != n.controlIncomplete {
				viol(d.dir, "close event counts %d control frames (%d incomplete), the stream holds %d (%d)",
					l.ControlFrames, l.ControlIncomplete, n.control, n.controlIncomplete)
			}
			if l.BytesImplied-l.BytesSeen != l.BytesMissing {
				r.Violations = append(r.Violations, Violation{Class: ClassLossReport, Key: key, Conn: id, Dir: d.dir, Index: -1,
					Detail: fmt.Sprintf("close event: implied %d - seen %d != missing %d", l.BytesImplied, l.BytesSeen, l.BytesMissing)})
			}
			if n.gapBytes != l.BytesMissing {
				r.Violations = append(r.Violations, Violation{Class: ClassLossReport, Key: key, Conn: id, Dir: d.dir, Index: -1,
					Detail: fmt.Sprintf("gap events total %d bytes, the close event says %d missing", n.gapBytes, l.BytesMissing)})
			}
		}
	}
	if b := r.Bounds; b != nil && (r.BytesMissing < b.Lo || r.BytesMissing > b.Hi) {
		r.Violations = append(r.Violations, Violation{Class: ClassLossReport, Index: -1,
			Detail: fmt.Sprintf("%d bytes reported missing, outside [%d, %d] (%s)", r.BytesMissing, b.Lo, b.Hi, b.Why)})
	}
}

// checkDelivery checks the results and the test system against the
// stream: every exact message of the replayed direction reached the test
// system once, nothing else did (under the skip policy), and the results
// say so.
func (r *Report) checkDelivery(prod []Production, s *Stream, res *Results, got []Delivery, o Options) {
	sent := map[Msg]bool{} // what production received in the replayed direction
	for _, p := range prod {
		if p.Dir == o.ReplayDir {
			for _, m := range p.Msgs {
				sent[m] = true
			}
		}
	}
	want := map[Msg]int{}    // exact messages the test system must get
	allowed := map[Msg]int{} // flagged messages it may get (send policy)
	byMsg := map[Msg]*StreamMsg{}
	for i := range s.msgs {
		m := &s.msgs[i]
		if m.Dir != o.ReplayDir || !dataOpcode(m.Opcode) {
			continue
		}
		if m.Complete {
			want[m.Msg()]++
			byMsg[m.Msg()] = m
		} else if o.Incomplete == "send" {
			allowed[m.Msg()]++
		}
	}
	have := map[Msg]int{}
	for i, d := range got {
		if d.Aborted {
			r.Aborted++
			continue
		}
		r.Delivered++
		have[d.Msg]++
		switch {
		case len(sent) > 0 && !sent[d.Msg] && allowed[d.Msg] == 0:
			r.Violations = append(r.Violations, Violation{Class: ClassNeverSent, Index: -1,
				Detail: fmt.Sprintf("test system message %d (%v) is no message production received", i, d.Msg)})
		case want[d.Msg] == 0 && allowed[d.Msg] == 0:
			r.Violations = append(r.Violations, Violation{Class: ClassNeverSent, Index: -1,
				Detail: fmt.Sprintf("test system message %d (%v) is no exact message of the stream", i, d.Msg)})
		case have[d.Msg] > want[d.Msg]+allowed[d.Msg]:
			r.Duplicates++
			m := byMsg[d.Msg]
			v := Violation{Class: ClassTwice, Index: -1, Detail: fmt.Sprintf("test system message %d (%v) delivered %d times", i, d.Msg, have[d.Msg])}
			if m != nil {
				v.Conn, v.Dir = m.Conn, m.Dir
				v.Key, _ = s.KeyOf(m.Conn)
				v.Detail += fmt.Sprintf(" (stream seq %d)", m.Seq)
			}
			r.Violations = append(r.Violations, v)
		}
	}
	for i := range s.msgs {
		m := &s.msgs[i]
		if m.Dir != o.ReplayDir || !dataOpcode(m.Opcode) {
			continue
		}
		key, _ := s.KeyOf(m.Conn)
		viol := func(class, format string, a ...any) {
			r.Violations = append(r.Violations, Violation{Class: class, Key: key, Conn: m.Conn, Dir: m.Dir, Index: -1,
				Detail: fmt.Sprintf("seq %d: ", m.Seq) + fmt.Sprintf(format, a...)})
		}
		delivered := have[m.Msg()] > 0
		if o.NoTestSystem {
			delivered = true
		}
		var rs []replay.Result
		if !o.NoResults && res != nil {
			rs = res.message(m.Conn, string(m.Dir), m.Seq)
		}
		inDoubt := len(rs) > 0 && rs[len(rs)-1].Result == replay.ResultInDoubt
		switch {
		case m.Complete && !delivered && inDoubt:
			r.InDoubt++ // reported by replay: it may have reached a test connection that died
		case m.Complete && !delivered:
			viol(ClassTestSystem, "exact in the stream (%v) but never reached the test system", m.Msg())
		}
		if o.NoResults || res == nil {
			continue
		}
		if len(rs) == 0 {
			viol(ClassResults, "no result on TAPLINE_RESULTS")
			continue
		}
		last := rs[len(rs)-1].Result
		switch {
		case inDoubt:
			// Delivered once or reported: either is honest.
		case m.Complete && last != "sent" && last != "match":
			viol(ClassResults, "exact message has result %q (%s)", last, rs[len(rs)-1].Reason)
		case !m.Complete && o.Incomplete == "skip" && last != "skipped":
			viol(ClassResults, "flagged message has result %q under --incomplete skip", last)
		case (last == "sent" || last == "match") && m.Complete && !delivered:
			viol(ClassResults, "result %q but the test system never received it", last)
		}
	}
	if o.NoResults || res == nil {
		return
	}
	for _, id := range s.connIDs() {
		replayed := false
		for i := range s.msgs {
			if s.msgs[i].Conn == id && s.msgs[i].Dir == o.ReplayDir && dataOpcode(s.msgs[i].Opcode) {
				replayed = true
				break
			}
		}
		if replayed && len(res.Summaries(id)) == 0 {
			key, _ := s.KeyOf(id)
			r.Violations = append(r.Violations, Violation{Class: ClassResults, Key: key, Conn: id, Index: -1,
				Detail: "no connection summary on TAPLINE_RESULTS"})
		}
	}
}

// tlsUndecryptable reports whether the last close event of any of conns
// says TLS records of dir were undecryptable.
func (s *Stream) tlsUndecryptable(conns map[string]bool, dir proto.Direction) bool {
	last := map[string]*proto.CloseEvent{}
	for _, c := range s.Closes() {
		if conns[c.Conn] {
			last[c.Conn] = c
		}
	}
	for _, c := range last {
		if c.TLS == nil {
			continue
		}
		l := c.TLS.S2C
		if dir == proto.ClientToServer {
			l = c.TLS.C2S
		}
		if l.RecordsUndecryptable > 0 {
			return true
		}
	}
	return false
}
