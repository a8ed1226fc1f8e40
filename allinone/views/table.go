package views

import (
	"sort"
	"strings"
	"time"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay"
)

// DirView is what is known of one direction of a connection.
type DirView struct {
	// Complete and Flagged count the messages published (their last
	// chunk seen): byte-exact, and incomplete by Tapline-Reason. A closed
	// connection whose close event counts more than the window showed
	// has the difference under the reason "before-window".
	Complete int64            `json:"complete"`
	Flagged  map[string]int64 `json:"flagged,omitempty"`
	// Lost is the close event's messages_lost: messages whose start was
	// seen but that could not be published.
	Lost int64 `json:"lost,omitempty"`
	// BytesMissing is the bytes reported lost: the larger of the gap
	// events' total and the close event's bytes_missing.
	BytesMissing int64 `json:"bytes_missing"`
	Gaps         int64 `json:"gaps"`
	// Bytes is the payload bytes of the messages published.
	Bytes int64 `json:"bytes"`

	gapBytes    int64
	counted     int64 // flagged counted from messages
	closedLoss  *proto.DirLoss
	closedCount bool
}

// FlaggedTotal is the number of flagged messages over every reason.
func (d *DirView) FlaggedTotal() int64 {
	var n int64
	for _, v := range d.Flagged {
		n += v
	}
	return n
}

// Conn is one connection as the streams tell it.
type Conn struct {
	ID         string `json:"conn"`
	VNI        uint32 `json:"vni"`
	Client     string `json:"client"`
	Server     string `json:"server"`
	Protocol   string `json:"protocol,omitempty"` // websocket or tcp; empty until the open event
	Deflate    bool   `json:"deflate,omitempty"`  // permessage-deflate negotiated or compressed messages seen
	Path       string `json:"path,omitempty"`
	MidStream  bool   `json:"mid_stream,omitempty"`
	Resumes    string `json:"resumes,omitempty"`
	State      string `json:"state"`                  // open or closed
	Reason     string `json:"close_reason,omitempty"` // the close event's reason
	BeforeOpen bool   `json:"opened_before_window,omitempty"`
	// C2S and S2C are the two directions.
	C2S DirView `json:"c2s"`
	S2C DirView `json:"s2c"`
	// Replay counts replay's results by outcome (sent, match, mismatch,
	// failed, skipped); ReplayReasons the reasons of the failed and
	// mismatched ones; ReplayEnd the end of replay's summary.
	Replay        map[string]int64 `json:"replay,omitempty"`
	ReplayReasons map[string]int64 `json:"replay_reasons,omitempty"`
	ReplayEnd     string           `json:"replay_end,omitempty"`
	// First and Last are when the streams first and last said something
	// about the connection (stream time).
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// Dir returns the view of one direction.
func (c *Conn) Dir(d proto.Direction) *DirView {
	if d == proto.ServerToClient {
		return &c.S2C
	}
	return &c.C2S
}

// Missing is the bytes reported missing over both directions.
func (c *Conn) Missing() int64 { return c.C2S.BytesMissing + c.S2C.BytesMissing }

// Flagged is the flagged messages over both directions.
func (c *Conn) Flagged() int64 { return c.C2S.FlaggedTotal() + c.S2C.FlaggedTotal() }

// Lossy reports whether anything of the connection was lost, flagged, or
// failed to replay exactly.
func (c *Conn) Lossy() bool {
	return c.Missing() > 0 || c.Flagged() > 0 || c.C2S.Lost+c.S2C.Lost > 0 ||
		c.Replay["mismatch"] > 0 || c.Replay["failed"] > 0
}

// ProtoName is the protocol as shown: websocket, websocket+deflate, tcp.
func (c *Conn) ProtoName() string {
	p := c.Protocol
	if p == "" {
		p = "?"
	}
	if c.Deflate {
		p += "+deflate"
	}
	return p
}

// StateName is open, or closed with its reason.
func (c *Conn) StateName() string {
	if c.State == "closed" && c.Reason != "" {
		return "closed:" + c.Reason
	}
	return c.State
}

// ReplayName summarises the replay outcome: e.g. "match 3 mismatch 1",
// "filtered" for a connection replay did not take (its summary says why),
// "-" when nothing was replayed.
func (c *Conn) ReplayName() string {
	var parts []string
	for _, k := range []string{"match", "sent", "mismatch", "failed", "skipped"} {
		if n := c.Replay[k]; n > 0 {
			parts = append(parts, k+" "+itoa(n))
		}
	}
	if len(parts) == 0 {
		if c.ReplayEnd == "filtered" {
			return "filtered"
		}
		return "-"
	}
	return strings.Join(parts, " ")
}

// Change is what one entry changed, for the line mode; Conn is nil for
// entries that change no connection.
type Change struct {
	Conn *Conn
	What string // open, gap, flagged, close, replay, wire
	Text string // the detail of the change
}

// Table folds the entries of TAPLINE_MSGS and TAPLINE_RESULTS into one
// Conn per connection id. It keeps at most Max closed connections (the
// least recently active are retired into the totals); 0 means 100000.
// A late entry of a retired connection (e.g. a replay result) starts a
// new row for it.
type Table struct {
	Max     int
	conns   map[string]*Conn
	closed  int // connections in conns whose state is closed
	retired Totals
	// Problems counts entries that could not be decoded.
	Problems int64
}

// NewTable returns an empty table.
func NewTable() *Table { return &Table{conns: map[string]*Conn{}} }

func (t *Table) conn(id string, at time.Time) *Conn {
	c := t.conns[id]
	if c == nil {
		c = &Conn{ID: id, State: "open", BeforeOpen: true, First: at}
		t.conns[id] = c
	}
	if at.After(c.Last) {
		c.Last = at
	}
	return c
}

// AddMsg takes one entry of TAPLINE_MSGS with its stream time and returns
// what it changed (What empty when nothing worth a line, e.g. a complete
// message).
func (t *Table) AddMsg(e ledger.Entry, body []byte, at time.Time) Change {
	switch {
	case e.Kind == proto.KindData:
		ch := e.Chunk
		c := t.conn(ch.Conn, at)
		c.VNI = ch.VNI
		if c.Client == "" {
			c.Client, c.Server = ch.Client, ch.Server
		}
		if ch.Compressed {
			c.Deflate = true
		}
		d := c.Dir(ch.Dir)
		d.Bytes += int64(len(body))
		if !ch.Last || !proto.DataOpcode(ch.Opcode) {
			// Control frames are not messages: the close event counts
			// them apart (control_frames).
			return Change{Conn: c}
		}
		if ch.Complete {
			d.Complete++
			return Change{Conn: c}
		}
		reason := ch.Reason
		if reason == "" {
			reason = "unknown"
		}
		if d.Flagged == nil {
			d.Flagged = map[string]int64{}
		}
		d.Flagged[reason]++
		d.counted++
		t.settle(d)
		return Change{Conn: c, What: "flagged", Text: string(ch.Dir) + " message " + utoa(ch.Seq) + " " + reason + ", " + itoa(ch.Missing) + " B missing of " + itoa(ch.Size)}
	case e.Open != nil:
		o := e.Open
		c := t.conn(o.Conn, at)
		c.BeforeOpen = false
		c.VNI, c.Client, c.Server, c.Protocol, c.Path = o.VNI, o.Client, o.Server, o.Protocol, o.Path
		c.MidStream, c.Resumes = o.MidStream, o.Resumes
		if strings.Contains(o.Extensions, "permessage-deflate") {
			c.Deflate = true
		}
		text := c.ProtoName()
		if o.Path != "" {
			text += " " + o.Path
		}
		if o.MidStream {
			text += " mid-stream"
		}
		if o.Resumes != "" {
			text += " resumes " + o.Resumes
		}
		return Change{Conn: c, What: "open", Text: text}
	case e.Gap != nil:
		g := e.Gap
		c := t.conn(g.Conn, at)
		d := c.Dir(g.Dir)
		d.gapBytes += g.Bytes
		if !d.closedCount {
			d.Gaps++
		}
		t.settle(d)
		text := string(g.Dir) + " " + itoa(g.Bytes) + " B lost at offset " + itoa(g.Offset)
		if g.Reason != "" {
			text += " (" + g.Reason + ")"
		}
		return Change{Conn: c, What: "gap", Text: text}
	case e.Close != nil:
		x := e.Close
		c := t.conn(x.Conn, at)
		if c.State != "closed" {
			t.closed++
		}
		c.State, c.Reason = "closed", x.Reason
		for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
			l := x.C2S
			if dir == proto.ServerToClient {
				l = x.S2C
			}
			d := c.Dir(dir)
			d.closedLoss = &l
			d.closedCount = true
			d.Gaps = max(d.Gaps, l.Gaps)
			d.Lost = l.MessagesLost
			t.settle(d)
		}
		t.retire()
		return Change{Conn: c, What: "close", Text: x.Reason + ", missing c2s " + itoa(c.C2S.BytesMissing) + " B s2c " + itoa(c.S2C.BytesMissing) + " B"}
	}
	return Change{}
}

// settle recomputes the figures that the close event may raise.
func (t *Table) settle(d *DirView) {
	d.BytesMissing = d.gapBytes
	l := d.closedLoss
	if l == nil {
		return
	}
	d.BytesMissing = max(d.gapBytes, l.BytesMissing)
	if l.MessagesComplete > d.Complete {
		d.Complete = l.MessagesComplete
	}
	if extra := l.MessagesIncomplete - d.counted; extra > 0 {
		if d.Flagged == nil {
			d.Flagged = map[string]int64{}
		}
		d.Flagged["before-window"] = extra
	} else if d.Flagged != nil {
		delete(d.Flagged, "before-window")
	}
}

// AddResult takes one replay result with its stream time.
func (t *Table) AddResult(r replay.Result, at time.Time) Change {
	if r.Conn == "" {
		return Change{}
	}
	c := t.conn(r.Conn, at)
	if r.Kind == "summary" {
		c.ReplayEnd = r.Result
		if r.Summary != nil {
			c.ReplayEnd = r.Summary.End
			if c.Client == "" {
				c.Client, c.Server = r.Summary.Client, r.Summary.Server
			}
		}
		return Change{Conn: c, What: "replay", Text: "ended " + c.ReplayEnd + ": " + c.ReplayName()}
	}
	if r.Opcode != "" && !proto.DataOpcode(r.Opcode) && r.Result != "mismatch" && r.Result != "failed" {
		// A control frame replayed as it should is not a message: the
		// counts stay those of the data messages, like EXACT.
		return Change{Conn: c}
	}
	if c.Replay == nil {
		c.Replay = map[string]int64{}
	}
	c.Replay[r.Result]++
	if r.Result == "mismatch" || r.Result == "failed" {
		if c.ReplayReasons == nil {
			c.ReplayReasons = map[string]int64{}
		}
		c.ReplayReasons[r.Result+": "+r.Reason]++
		return Change{Conn: c, What: "replay", Text: string(r.Dir) + " message " + utoa(r.Seq) + " " + r.Result + ": " + r.Reason}
	}
	return Change{Conn: c}
}

// retire drops the least recently active closed connections when there
// are more than Max, down to 90 % of Max (so that the sort is paid once
// per Max/10 closes), adding them to the totals.
func (t *Table) retire() {
	limit := t.Max
	if limit <= 0 {
		limit = 100000
	}
	if t.closed <= limit {
		return
	}
	var cs []*Conn
	for _, c := range t.conns {
		if c.State == "closed" {
			cs = append(cs, c)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Last.Before(cs[j].Last) })
	for _, c := range cs[:len(cs)-(limit-limit/10)] {
		t.retired.add(c)
		t.retired.Retired++
		delete(t.conns, c.ID)
		t.closed--
	}
}

// Conns returns the connections, unsorted.
func (t *Table) Conns() []*Conn {
	out := make([]*Conn, 0, len(t.conns))
	for _, c := range t.conns {
		out = append(out, c)
	}
	return out
}

// Totals sums every connection, including the retired ones.
func (t *Table) Totals() Totals {
	tot := t.retired
	tot.Flagged = map[string]int64{}
	tot.Replay = map[string]int64{}
	for k, v := range t.retired.Flagged {
		tot.Flagged[k] = v
	}
	for k, v := range t.retired.Replay {
		tot.Replay[k] = v
	}
	for _, c := range t.conns {
		tot.add(c)
	}
	return tot
}
