package ledger

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tapline/tapline/proto"
)

// Violation classes: what part of the promise a Violation breaks.
const (
	ClassWire        = "wire"        // an entry breaks the wire contract (malformed, chunks out of order, incomplete without reason)
	ClassNeverSent   = "never-sent"  // a message reported complete (or delivered) that production never sent, e.g. a truncated prefix
	ClassTwice       = "twice"       // a message complete twice in the stream, or delivered twice to the test system
	ClassUnaccounted = "unaccounted" // a production message neither exact, nor flagged, nor covered by a loss report
	ClassExtraFlag   = "extra-flag"  // a flagged message where production sent none and no loss was reported
	ClassClose       = "close"       // a close event missing, repeated, or whose counts disagree with the stream
	ClassLossReport  = "loss-report" // bytes reported missing inconsistent, or outside the bounds of what was dropped
	ClassResults     = "results"     // TAPLINE_RESULTS disagrees with the stream or with the test system
	ClassTestSystem  = "test-system" // an exact message that never reached the test system, or a flagged one that did
)

// Violation is one broken part of the promise.
type Violation struct {
	Class string
	Key   Key
	Conn  string          // connection id, when known
	Dir   proto.Direction // when it applies
	// Index is the production message index (from 0) within Key and Dir,
	// or -1.
	Index  int
	Detail string
}

func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s]", v.Class)
	if v.Key != (Key{}) {
		fmt.Fprintf(&b, " %s", v.Key)
	}
	if v.Conn != "" {
		fmt.Fprintf(&b, " conn %s", v.Conn)
	}
	if v.Dir != "" {
		fmt.Fprintf(&b, " %s", v.Dir)
	}
	if v.Index >= 0 {
		fmt.Fprintf(&b, " message %d", v.Index)
	}
	b.WriteString(": ")
	b.WriteString(v.Detail)
	return b.String()
}

// ConnFigures is the account of one connection and direction.
type ConnFigures struct {
	Key      Key
	Dir      proto.Direction
	Conns    []string // connection ids the stream used for it
	Produced int
	Exact    int
	Flagged  map[string]int // by Tapline-Reason
	Lost     int
	// Undecryptable counts production messages of a TLS connection whose
	// close event reports records of the direction undecryptable.
	Undecryptable int
}

// Figures are the totals of a reconciliation.
type Figures struct {
	Produced int            // production messages accounted for
	Exact    int            // reached the stream complete and byte-identical
	Flagged  map[string]int // production messages flagged, by reason
	Lost     int            // production messages covered by a loss report
	// Undecryptable counts production messages not in the stream of TLS
	// connections whose close event reports records of that direction
	// undecryptable (keys never came, authentication failed): reported,
	// like Lost, but by the TLS record account rather than a gap.
	Undecryptable int
	// Delivered counts the test system's complete messages, Duplicates
	// those beyond the first of one message, Aborted its aborted ones.
	Delivered, Duplicates, Aborted int
	// InDoubt counts exact messages the test system did not receive whose
	// result is replay's explicit in-doubt report (replay stopped after
	// writing them and before their confirmation, and does not send them
	// twice): reported, not a violation.
	InDoubt int
	// BytesMissing is the loss report: bytes missing over every
	// connection and direction (per connection and direction the larger
	// of its close event's figure and its gap events' total).
	BytesMissing int64
	Bounds       *Bounds
}

// Report is the outcome of Reconcile.
type Report struct {
	Figures
	Conns      []ConnFigures
	Violations []Violation
}

// OK reports whether the ledger balances.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// Summary is the one-line figures.
func (r *Report) Summary() string {
	flagged := 0
	var reasons []string
	for reason, n := range r.Flagged {
		flagged += n
		reasons = append(reasons, fmt.Sprintf("%s %d", reason, n))
	}
	sort.Strings(reasons)
	s := fmt.Sprintf("ledger: %d production messages = %d exact + %d flagged (%s) + %d lost; test system %d delivered, %d duplicates, %d aborted; %d bytes reported missing",
		r.Produced, r.Exact, flagged, strings.Join(reasons, ", "), r.Lost, r.Delivered, r.Duplicates, r.Aborted, r.BytesMissing)
	if r.Undecryptable > 0 {
		s += fmt.Sprintf("; %d undecryptable (reported by the TLS record account)", r.Undecryptable)
	}
	if r.InDoubt > 0 {
		s += fmt.Sprintf("; %d in doubt (reported by replay, not received)", r.InDoubt)
	}
	if r.Bounds != nil {
		s += fmt.Sprintf(" (bounds [%d, %d]: %s)", r.Bounds.Lo, r.Bounds.Hi, r.Bounds.Why)
	}
	return s + fmt.Sprintf("; %d violations", len(r.Violations))
}

// String is the summary, the per-connection figures and the violations
// (at most 200 of them, then a count).
func (r *Report) String() string {
	var b strings.Builder
	b.WriteString(r.Summary())
	b.WriteByte('\n')
	for _, c := range r.Conns {
		fmt.Fprintf(&b, "  %s %s %v: %d = %d exact + %v flagged + %d lost + %d undecryptable\n", c.Key, c.Dir, c.Conns, c.Produced, c.Exact, c.Flagged, c.Lost, c.Undecryptable)
	}
	for i, v := range r.Violations {
		if i == 200 {
			fmt.Fprintf(&b, "  ... %d more violations\n", len(r.Violations)-i)
			break
		}
		fmt.Fprintf(&b, "  %s\n", v)
	}
	return b.String()
}

// Classes counts the violations by class.
func (r *Report) Classes() map[string]int {
	m := map[string]int{}
	for _, v := range r.Violations {
		m[v.Class]++
	}
	return m
}
