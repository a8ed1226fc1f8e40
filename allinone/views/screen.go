package views

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Sort orders of the watch view, cycled with the s key.
var sortOrders = []string{"activity", "missing", "flagged", "client", "opened"}

// Screen is the state of the terminal view (sort order, filter, scroll)
// and draws it; it knows nothing of the terminal itself, so it can be
// tested as text.
type Screen struct {
	Sort    string // one of activity, missing, flagged, client, opened
	Filter  string // substring (case-insensitive) of any shown field
	Lossy   bool   // only connections with loss, flags or replay failures
	Top     int    // first row shown (scrolling)
	Editing bool   // the filter is being typed
	Status  string // bottom line status (caught up, waiting for …)
	Source  string // what is watched, shown in the title
	Quit    bool
	edit    string
}

// Key applies one key press (a byte, or "up"/"down" for the arrows) and
// reports whether the view changed.
func (s *Screen) Key(k string) bool {
	if s.Editing {
		switch k {
		case "\r", "\n":
			s.Filter, s.Editing, s.Top = s.edit, false, 0
		case "\x1b":
			s.Editing = false
		case "\x7f", "\b":
			if s.edit != "" {
				_, n := utf8.DecodeLastRuneInString(s.edit)
				s.edit = s.edit[:len(s.edit)-n]
			}
		case "\x03":
			s.Quit = true
		default:
			if len(k) >= 1 && k[0] >= 0x20 && k != "up" && k != "down" {
				s.edit += k
			}
		}
		return true
	}
	switch k {
	case "q", "Q", "\x03", "\x04":
		s.Quit = true
	case "s":
		i := 0
		for j, o := range sortOrders {
			if o == s.Sort {
				i = j
			}
		}
		s.Sort, s.Top = sortOrders[(i+1)%len(sortOrders)], 0
	case "m":
		s.Sort, s.Top = "missing", 0
	case "a":
		s.Sort, s.Top = "activity", 0
	case "l":
		s.Lossy, s.Top = !s.Lossy, 0
	case "/":
		s.Editing, s.edit = true, s.Filter
	case "c":
		s.Filter, s.Lossy, s.Top = "", false, 0
	case "j", "down":
		s.Top++
	case "k", "up":
		s.Top = max(0, s.Top-1)
	default:
		return false
	}
	return true
}

// Match reports whether a connection passes the filter.
func (s *Screen) Match(c *Conn) bool {
	if s.Lossy && !c.Lossy() {
		return false
	}
	if s.Filter == "" {
		return true
	}
	f := strings.ToLower(s.Filter)
	for _, v := range []string{c.ID, c.Client, c.Server, fmt.Sprint(c.VNI), c.ProtoName(), c.StateName(), c.Path, c.ReplayName(), flaggedText(merged(c.C2S.Flagged, c.S2C.Flagged))} {
		if strings.Contains(strings.ToLower(v), f) {
			return true
		}
	}
	return false
}

// Order sorts connections by the screen's sort order.
func (s *Screen) Order(cs []*Conn) {
	less := func(a, b *Conn) bool { return a.Last.After(b.Last) }
	switch s.Sort {
	case "missing":
		less = func(a, b *Conn) bool {
			if a.Missing() != b.Missing() {
				return a.Missing() > b.Missing()
			}
			return a.Last.After(b.Last)
		}
	case "flagged":
		less = func(a, b *Conn) bool {
			fa, fb := a.Flagged()+a.C2S.Lost+a.S2C.Lost, b.Flagged()+b.C2S.Lost+b.S2C.Lost
			if fa != fb {
				return fa > fb
			}
			return a.Last.After(b.Last)
		}
	case "client":
		less = func(a, b *Conn) bool {
			if a.Client != b.Client {
				return a.Client < b.Client
			}
			return a.Server < b.Server
		}
	case "opened":
		less = func(a, b *Conn) bool { return a.First.After(b.First) }
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if less(cs[i], cs[j]) != less(cs[j], cs[i]) {
			return less(cs[i], cs[j])
		}
		return cs[i].ID < cs[j].ID
	})
}

// fit pads or cuts s to exactly w columns (runes).
func fit(s string, w int) string {
	n := utf8.RuneCountInString(s)
	if n > w {
		if w <= 1 {
			return string([]rune(s)[:w])
		}
		return string([]rune(s)[:w-1]) + "…"
	}
	return s + strings.Repeat(" ", w-n)
}

func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
}

// columns of the connection rows: title and width.
var columns = []struct {
	title string
	w     int
}{
	{"CLIENT", 21}, {"SERVER", 21}, {"VNI", 8}, {"PROTOCOL", 17}, {"EXACT", 6}, {"FLAGGED", 18},
	{"LOST", 4}, {"MISS C2S", 9}, {"MISS S2C", 9}, {"STATE", 14}, {"LAST", 4}, {"REPLAY", 24},
}

func row(vals ...string) string {
	var b strings.Builder
	for i, v := range vals {
		if i == len(vals)-1 {
			b.WriteString(v)
			break
		}
		b.WriteString(fit(v, columns[i].w))
		b.WriteByte(' ')
	}
	return b.String()
}

// Lines draws the view for a terminal of w columns and h rows: title,
// totals, mirror drops, column titles, one row per connection shown, and
// a help/status line at the bottom. Every line is cut to w.
func (s *Screen) Lines(t *Table, d *Drops, now time.Time, w, h int) []string {
	cs := t.Conns()
	shown := cs[:0:0]
	for _, c := range cs {
		if s.Match(c) {
			shown = append(shown, c)
		}
	}
	s.Order(shown)
	tot := t.Totals()
	view := "sort: " + s.Sort
	if s.Lossy {
		view += ", lossy only"
	}
	if s.Filter != "" {
		view += fmt.Sprintf(", filter %q", s.Filter)
	}
	lines := []string{
		fmt.Sprintf("tapline watch %s — %d connections (%d open, %d lossy or mismatched), %d shown — %s", s.Source, tot.Conns, tot.Open, tot.Lossy, len(shown), view),
		fmt.Sprintf("messages exact %d, flagged %s, lost %d; bytes missing c2s %d, s2c %d; replay %s", tot.Complete, flaggedText(tot.Flagged), tot.Lost, tot.MissingC2S, tot.MissingS2C, replayText(tot.Replay)),
	}
	mirror := "mirror drops: none reported"
	if st := d.Stages(); len(st) > 0 {
		var parts []string
		for _, x := range st {
			name := x.Stage
			if n := len(x.Instances); n > 1 {
				name += " (" + strconv.Itoa(n) + " instances)"
			}
			parts = append(parts, name+": "+x.Line())
		}
		mirror = "mirror drops: " + strings.Join(parts, "; ")
	}
	lines = append(lines, mirror)
	titles := make([]string, len(columns))
	for i, c := range columns {
		titles[i] = c.title
	}
	lines = append(lines, row(titles...))
	room := h - len(lines) - 1
	if room < 0 {
		room = 0
	}
	if s.Top > len(shown)-room {
		s.Top = max(0, len(shown)-room)
	}
	for i := s.Top; i < len(shown) && i < s.Top+room; i++ {
		c := shown[i]
		lines = append(lines, row(c.Client, c.Server, fmt.Sprint(c.VNI), c.ProtoName(),
			fmt.Sprint(c.C2S.Complete+c.S2C.Complete), flaggedText(merged(c.C2S.Flagged, c.S2C.Flagged)),
			fmt.Sprint(c.C2S.Lost+c.S2C.Lost), fmt.Sprint(c.C2S.BytesMissing), fmt.Sprint(c.S2C.BytesMissing),
			c.StateName(), age(now, c.Last), c.ReplayName()))
	}
	for len(lines) < h-1 {
		lines = append(lines, "")
	}
	help := "s sort  m by missing  a by activity  l lossy  / filter  c clear  j/k scroll  q quit"
	if s.Editing {
		help = "filter: " + s.edit + "▏ (Enter apply, Esc cancel)"
	}
	if s.Status != "" {
		help += "  │ " + s.Status
	}
	lines = append(lines, help)
	if len(lines) > h && h > 0 {
		lines = lines[len(lines)-h:]
	}
	for i, l := range lines {
		if utf8.RuneCountInString(l) > w {
			lines[i] = string([]rune(l)[:w])
		}
	}
	return lines
}

// PlainLine is the line mode's line for one change.
func PlainLine(ch Change, at time.Time) string {
	ts := at.UTC().Format("2006-01-02T15:04:05.000Z")
	if ch.Conn == nil {
		return fmt.Sprintf("%s %-7s %s", ts, ch.What, ch.Text)
	}
	c := ch.Conn
	client, server := c.Client, c.Server
	if client == "" {
		client, server = "?", "?"
	}
	return fmt.Sprintf("%s %-7s %s -> %s vni %d: %s [conn %s]", ts, ch.What, client, server, c.VNI, ch.Text, c.ID)
}
