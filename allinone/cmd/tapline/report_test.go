package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tapline/tapline/allinone/views"
	"github.com/tapline/tapline/proto"
)

// TestReportPipeline: `tapline report` on a real pipeline states per
// connection and in total what the ledger reads from the same streams
// (exact, flagged by reason, lost, bytes missing per direction, replay
// outcomes), with decap's drop counters next to it; as JSON and as a
// table; exit 0.
func TestReportPipeline(t *testing.T) {
	p := startViewPipeline(t)
	p.feed(t)
	s, res := p.ledger(t)
	before := p.consumers(t)
	defer p.noNewConsumers(t, before)

	out, err := tapline("report", "--since", "1h", "--json", "--nats-url", p.url).Output()
	if err != nil {
		t.Fatalf("tapline report --json: %v", err)
	}
	var rep views.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report JSON: %v\n%s", err, out)
	}

	// The ledger's account of each connection and direction.
	type acct struct {
		complete, lost, missing int64
		flagged                 map[string]int64
	}
	want := map[string]map[proto.Direction]*acct{}
	get := func(conn string, d proto.Direction) *acct {
		if want[conn] == nil {
			want[conn] = map[proto.Direction]*acct{}
		}
		if want[conn][d] == nil {
			want[conn][d] = &acct{flagged: map[string]int64{}}
		}
		return want[conn][d]
	}
	for _, m := range s.Messages() {
		if !proto.DataOpcode(m.Opcode) {
			continue // control frames are not messages
		}
		a := get(m.Conn, m.Dir)
		if m.Complete {
			a.complete++
		} else {
			a.flagged[m.Reason]++
		}
	}
	gapBytes := map[string]int64{}
	for _, g := range s.Gaps() {
		gapBytes[g.Conn+string(g.Dir)] += g.Bytes
	}
	var lossyConn string
	var totalMissing int64
	for _, c := range s.Closes() {
		for _, d := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
			l := c.C2S
			if d == proto.ServerToClient {
				l = c.S2C
			}
			a := get(c.Conn, d)
			a.lost = l.MessagesLost
			a.missing = max(l.BytesMissing, gapBytes[c.Conn+string(d)])
			totalMissing += a.missing
			if a.missing > 0 {
				lossyConn = c.Conn
				if l.BytesImplied-l.BytesSeen != a.missing {
					t.Errorf("%s %s: ledger figure %d B missing, close event implied-seen %d", c.Conn, d, a.missing, l.BytesImplied-l.BytesSeen)
				}
			}
		}
	}
	if lossyConn == "" {
		t.Fatal("the pipeline produced no lossy connection; tcp-gaps-truncated-http.pcap has holes")
	}
	if len(rep.Connections) != len(want) {
		t.Errorf("report lists %d connections, the stream has %d", len(rep.Connections), len(want))
	}
	var flaggedTotal int64
	for _, c := range rep.Connections {
		if c.State != "closed" {
			t.Errorf("%s: state %s, want closed", c.ID, c.State)
		}
		key, _ := s.KeyOf(c.ID)
		if c.Client != key.Client || c.Server != key.Server {
			t.Errorf("%s: %s -> %s, the stream says %s", c.ID, c.Client, c.Server, key)
		}
		for _, d := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
			got := c.Dir(d)
			w := get(c.ID, d)
			if got.Complete != w.complete || got.Lost != w.lost || got.BytesMissing != w.missing {
				t.Errorf("%s %s: report exact %d lost %d missing %d B, ledger %d, %d, %d B", c.ID, d, got.Complete, got.Lost, got.BytesMissing, w.complete, w.lost, w.missing)
			}
			if fmt.Sprint(got.Flagged) != fmt.Sprint(w.flagged) && !(len(got.Flagged) == 0 && len(w.flagged) == 0) {
				t.Errorf("%s %s: report flagged %v, ledger %v", c.ID, d, got.Flagged, w.flagged)
			}
			flaggedTotal += got.FlaggedTotal()
		}
		// Replay outcomes: the report counts what TAPLINE_RESULTS says.
		var sum int64
		for _, n := range c.Replay {
			sum += n
		}
		if len(res.Summaries(c.ID)) == 0 || c.ReplayEnd == "" {
			t.Errorf("%s: no replay end in the report (%q)", c.ID, c.ReplayEnd)
		}
		// A connection replay does not take (raw TCP without a tcp://
		// target) has only its summary, which says why.
		if filtered := c.ReplayEnd == "filtered"; sum == 0 && !filtered {
			t.Errorf("%s: no replay results in the report", c.ID)
		} else if filtered && c.ReplayName() != "filtered" {
			t.Errorf("%s: a filtered connection shows %q in the REPLAY column", c.ID, c.ReplayName())
		}
		if c.ID == lossyConn && !c.Lossy() {
			t.Errorf("%s: the lossy connection is not reported lossy", c.ID)
		}
	}
	if rep.Totals.MissingC2S+rep.Totals.MissingS2C != totalMissing || rep.Totals.FlaggedTotal() != flaggedTotal || flaggedTotal == 0 {
		t.Errorf("totals: %d B missing, %d flagged; ledger %d B missing, connections %d flagged", rep.Totals.MissingC2S+rep.Totals.MissingS2C, rep.Totals.FlaggedTotal(), totalMissing, flaggedTotal)
	}
	if rep.Totals.Lossy != 1 || rep.Totals.Conns != 2 {
		t.Errorf("totals: %d connections, %d lossy; want 2, 1", rep.Totals.Conns, rep.Totals.Lossy)
	}
	// decap's own drops: every datagram on VNI 99 was filtered.
	var decapDrops *views.StageDrops
	for i := range rep.Mirror {
		if rep.Mirror[i].Stage == "decap" {
			decapDrops = &rep.Mirror[i]
		}
	}
	if decapDrops == nil || decapDrops.Counters["filtered.vni"] != float64(p.filtered) {
		t.Errorf("mirror drops %+v, want decap filtered.vni %d", rep.Mirror, p.filtered)
	}
	if decapDrops != nil && (len(decapDrops.Instances) != 1 || strings.Count(decapDrops.Instances[0], "/") != 2) {
		t.Errorf("decap's drop reports name instances %q, want one <host>/<pid>/<random>", decapDrops.Instances)
	}
	// Bytes are missing: the report says what it cannot count.
	if !strings.Contains(rep.Unknown, "lost whole inside the gaps") {
		t.Errorf("not_known %q: the report does not say it cannot count messages lost whole in a gap", rep.Unknown)
	}

	// The table says the same.
	text, err := tapline("report", "--since", "1h", "--nats-url", p.url).Output()
	if err != nil {
		t.Fatalf("tapline report: %v", err)
	}
	var lossyRow string
	for _, l := range strings.Split(string(text), "\n") {
		if key, _ := s.KeyOf(lossyConn); strings.HasPrefix(l, key.Client+" ") {
			lossyRow = l
		}
	}
	l := get(lossyConn, proto.ClientToServer)
	for _, w := range []string{fmt.Sprintf("%d B", l.missing), fmt.Sprintf("gap %d", l.flagged["gap"]), "closed:"} {
		if !strings.Contains(lossyRow, w) {
			t.Errorf("the lossy connection's row %q lacks %q\n%s", lossyRow, w, text)
		}
	}
	for _, w := range []string{"TOTAL", fmt.Sprintf("filtered.vni %d", p.filtered), "2 connections", "1 instance: ", "Not known: messages lost whole inside the gaps"} {
		if !strings.Contains(string(text), w) {
			t.Errorf("report lacks %q:\n%s", w, text)
		}
	}
	t.Logf("\n%s", text)
}
