package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/allinone/views"
	"github.com/tapline/tapline/proto"
)

// checkReport compares what `tapline report` states (views.Collect and
// NewReport, the command's code) with a balanced ledger of the same
// streams: the bytes reported missing; in the direction production sent
// (dir) at least the ledger's exact messages; something flagged and a
// lossy connection when the ledger found them. (Messages lost whole
// inside a gap are only bytes missing to the report: it has no list of
// what production sent.)
func checkReport(t *testing.T, p *Pipeline, rep *ledger.Report, dir proto.Direction) {
	t.Helper()
	if !rep.OK() {
		return // the ledger's own failure says more
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb, d, missing, err := views.Collect(ctx, p.JS, time.Unix(0, 0))
	if err != nil {
		t.Fatalf("tapline report: %v", err)
	}
	r := views.NewReport(tb, d, missing, time.Unix(0, 0), time.Now())
	var exact int64
	for _, c := range r.Connections {
		exact += c.Dir(dir).Complete
	}
	tot := r.Totals
	if got := tot.MissingC2S + tot.MissingS2C; got != rep.BytesMissing {
		t.Errorf("tapline report: %d bytes missing, the ledger %d", got, rep.BytesMissing)
	}
	// The stream's complete messages include control messages (a close
	// frame) that production's list does not have.
	if exact < int64(rep.Exact) {
		t.Errorf("tapline report: %d exact %s messages, the ledger %d", exact, dir, rep.Exact)
	}
	flagged := 0
	for _, n := range rep.Flagged {
		flagged += n
	}
	if flagged > 0 && tot.FlaggedTotal() == 0 {
		t.Errorf("tapline report: nothing flagged, the ledger: %s", rep.Summary())
	}
	if (flagged+rep.Lost > 0 || rep.BytesMissing > 0) && tot.Lossy == 0 {
		t.Errorf("tapline report: no connection with loss, the ledger: %s", rep.Summary())
	}
	if r.Problems != 0 {
		t.Errorf("tapline report: %d entries could not be decoded", r.Problems)
	}
	t.Logf("tapline report: %d connections, %d exact %s, flagged %v, %d lost, %d+%d B missing",
		tot.Conns, exact, dir, tot.Flagged, tot.Lost, tot.MissingC2S, tot.MissingS2C)
}
