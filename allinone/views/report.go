package views

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the loss report of a time window: what `tapline report
// --json` prints.
type Report struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Connections are sorted by client, server, then connection id.
	Connections []*Conn `json:"connections"`
	Totals      Totals  `json:"totals"`
	// Mirror is the stages' own drop counters (TAPLINE_EVENTS).
	Mirror []StageDrops `json:"mirror"`
	// Problems counts stream entries that could not be decoded.
	Problems int64 `json:"problems,omitempty"`
	// Missing names the streams that do not exist on the server.
	Missing []string `json:"missing_streams,omitempty"`
	// Unknown says what the streams cannot tell, when it matters for
	// this window (bytes were missing): how many messages fell whole
	// inside the gaps.
	Unknown string `json:"not_known,omitempty"`
}

// unknownInGaps is Report.Unknown when bytes are missing. A message whose
// every byte fell inside a gap leaves no trace in TAPLINE_MSGS (the
// Tapline-Seq numbers count what the decoder saw), so only production's
// own list of messages can count it.
const unknownInGaps = "messages lost whole inside the gaps are not counted in any message column " +
	"(LOST counts those whose start was seen): they are in the bytes missing, and how many there were " +
	"is known only from production's list of messages (tapline ledger --expected)"

// NewReport builds the report of a collected window.
func NewReport(t *Table, d *Drops, missing []string, since, until time.Time) *Report {
	cs := t.Conns()
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.Client != b.Client {
			return a.Client < b.Client
		}
		if a.Server != b.Server {
			return a.Server < b.Server
		}
		return a.First.Before(b.First) || a.First.Equal(b.First) && a.ID < b.ID
	})
	r := &Report{Since: since, Until: until, Connections: cs, Totals: t.Totals(), Mirror: d.Stages(),
		Problems: t.Problems, Missing: missing}
	if r.Totals.MissingC2S+r.Totals.MissingS2C > 0 {
		r.Unknown = unknownInGaps
	}
	return r
}

// flaggedText is "3 (gap 2, undecodable 1)" or "0".
func flaggedText(m map[string]int64) string {
	var n int64
	var keys []string
	for k, v := range m {
		if v > 0 {
			n += v
			keys = append(keys, k)
		}
	}
	if n == 0 {
		return "0"
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return fmt.Sprintf("%d (%s)", n, strings.Join(parts, ", "))
}

func merged(a, b map[string]int64) map[string]int64 {
	m := map[string]int64{}
	for k, v := range a {
		m[k] += v
	}
	for k, v := range b {
		m[k] += v
	}
	return m
}

// WriteText prints the report as tables: one row per connection, the
// totals, and the mirror's drop counters.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "Tapline loss report %s .. %s: %d connections (%d open, %d lossy or mismatched)\n\n",
		r.Since.UTC().Format(time.RFC3339), r.Until.UTC().Format(time.RFC3339), r.Totals.Conns, r.Totals.Open, r.Totals.Lossy)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tSERVER\tVNI\tPROTOCOL\tSTATE\tEXACT\tFLAGGED\tLOST\tMISSING C2S\tMISSING S2C\tREPLAY")
	for _, c := range r.Connections {
		client, server := c.Client, c.Server
		if client == "" {
			client, server = "conn "+c.ID, "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%d\t%d B\t%d B\t%s\n", client, server, c.VNI, c.ProtoName(), c.StateName(),
			c.C2S.Complete+c.S2C.Complete, flaggedText(merged(c.C2S.Flagged, c.S2C.Flagged)), c.C2S.Lost+c.S2C.Lost,
			c.C2S.BytesMissing, c.S2C.BytesMissing, c.ReplayName())
	}
	t := r.Totals
	fmt.Fprintf(tw, "TOTAL\t%d connections\t\t\t%d open\t%d\t%s\t%d\t%d B\t%d B\t%s\n", t.Conns, t.Open, t.Complete,
		flaggedText(t.Flagged), t.Lost, t.MissingC2S, t.MissingS2C, replayText(t.Replay))
	tw.Flush()
	if t.Retired > 0 {
		fmt.Fprintf(w, "(%d closed connections not listed, counted in the totals)\n", t.Retired)
	}
	if r.Unknown != "" {
		fmt.Fprintf(w, "Not known: %s.\n", r.Unknown)
	}
	fmt.Fprintln(w, "\nThe mirror's own drops (stage reports on TAPLINE_EVENTS in the window):")
	seen := map[string]bool{}
	for _, s := range r.Mirror {
		seen[s.Stage] = true
		fmt.Fprintf(w, "  %-11s %s (%d reports, last %s; %s)\n", s.Stage+":", s.Line(), s.Reports, s.Last.UTC().Format(time.RFC3339), s.InstancesText())
	}
	for _, s := range []string{"decap", "reassemble"} {
		if !seen[s] {
			fmt.Fprintf(w, "  %-11s no drop report (a stage reports only when a count grew)\n", s+":")
		}
	}
	if r.Problems > 0 {
		fmt.Fprintf(w, "\n%d stream entries could not be decoded\n", r.Problems)
	}
	for _, s := range r.Missing {
		fmt.Fprintf(w, "(no %s stream on this server)\n", s)
	}
}

func replayText(m map[string]int64) string {
	c := Conn{Replay: m}
	return c.ReplayName()
}

// ReportMain is `tapline report [--since D] [--json]`: it reads the window
// of TAPLINE_MSGS, TAPLINE_RESULTS and TAPLINE_EVENTS and prints the loss
// report. Exit 0 when the report was printed (whatever it says), 1 when
// the streams could not be read, 2 on bad usage.
func ReportMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tapline report", flag.ContinueOnError)
	var c conn
	c.register(fs)
	since := fs.Duration("since", time.Hour, "report on what the streams hold from this long ago")
	asJSON := fs.Bool("json", false, "print the report as one JSON object (see allinone/README.md)")
	if code := c.parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tapline report: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *since <= 0 {
		fmt.Fprintln(stderr, "tapline report: --since must be positive")
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	nc, js, err := c.connect(ctx, "tapline-report")
	if err != nil {
		fmt.Fprintf(stderr, "tapline report: %v\n", err)
		return 1
	}
	defer nc.Close()
	until := time.Now()
	from := until.Add(-*since)
	t, d, missing, err := Collect(ctx, js, from)
	if err != nil {
		fmt.Fprintf(stderr, "tapline report: %v\n", err)
		return 1
	}
	rep := NewReport(t, d, missing, from, until)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "tapline report: %v\n", err)
			return 1
		}
		return 0
	}
	rep.WriteText(stdout)
	return 0
}
