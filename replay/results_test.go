package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/replay/internal/testsys"
)

// storedResults reads every result TAPLINE_RESULTS holds (what the stream
// stored, not what subscribers saw: a result published again is seen
// twice but stored once).
func storedResults(t *testing.T, js jetstream.JetStream) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, proto.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []Result
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		var r Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("stored result %d: %v", seq, err)
		}
		out = append(out, r)
	}
	return out
}

// messageResults counts the stored results of each message (conn/seq) of
// the replayed direction.
func messageResults(rs []Result) map[string]int {
	n := map[string]int{}
	for _, r := range rs {
		if r.Kind == "message" && r.Dir == proto.ClientToServer && r.Seq > 0 {
			n[fmt.Sprintf("%s/%d", r.Conn, r.Seq)]++
		}
	}
	return n
}

// waitStored polls the results stream until every message of the convs
// has a stored result and every connection its summary.
func waitStored(t *testing.T, e *env, convs []*conv) []Result {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rs := storedResults(t, e.js)
		per := messageResults(rs)
		summaries := 0
		for _, r := range rs {
			if r.Kind == "summary" {
				summaries++
			}
		}
		var missing []string
		for _, c := range convs {
			for _, m := range c.msgs {
				if id := fmt.Sprintf("%s/%d", c.id, m.Seq); per[id] == 0 {
					missing = append(missing, id)
				}
			}
		}
		if len(missing) == 0 && summaries >= len(convs) {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2m, %d messages have no stored result (%v), %d of %d summaries stored", len(missing), missing[:min(len(missing), 10)], summaries, len(convs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestResultsSurviveNATSRestart restarts the NATS server (same store and
// port) while replay delivers and reports messages. Every message must
// end with exactly one stored result — none lost with the restart (an
// unanswered or refused publication is published again), none stored
// twice (the retries carry the message's Msg-Id) — and reach the test
// system once.
func TestResultsSurviveNATSRestart(t *testing.T) {
	srv, url := natstest.Run(t)
	e := newEnvURL(t, url)
	ts := testsys.NewWS(t)
	const nConns, nMsgs = 4, 150
	var convs []*conv
	var all []*nats.Msg
	for i := range nConns {
		c := newConv(i, fmt.Sprintf("/restart/%d", i))
		for k := 1; k <= nMsgs; k++ {
			c.add(proto.ClientToServer, proto.OpText, []byte(fmt.Sprintf("%d/%d", i, k)))
		}
		convs = append(convs, c)
		all = append(all, c.entries("websocket")...)
	}
	e.publish(all...)
	e.startReplay(nil, "--target", ts.URL(), "--compare=false", "--rate-msgs", "400", "--ack-wait", "3s")
	ts.Wait(t, 60*time.Second, "a third of the messages", func(rs []testsys.Record) bool { return len(rs) >= nConns*nMsgs/3 })
	natstest.Restart(t, srv)
	rs := waitStored(t, e, convs)
	for id, n := range messageResults(rs) {
		if n != 1 {
			t.Errorf("message %s has %d stored results, want 1", id, n)
		}
	}
	got := map[string]int{}
	for _, r := range ts.Records() {
		got[string(r.Payload)]++
	}
	for p, n := range got {
		if n > 1 {
			t.Errorf("message %s reached the test system %d times", p, n)
		}
	}
	waitAcked(t, e, "tapline-replay")
}

// TestUnstoredResultLeavesMessageUnacknowledged: replay delivers two
// messages but cannot store their results (the results subject has no
// stream). Their entries must stay unacknowledged, so that after a
// restart with working results JetStream redelivers them and each gets
// its one stored result — not sent again (the delivery ledger says it
// may have been received: in doubt), never acknowledged with no account.
func TestUnstoredResultLeavesMessageUnacknowledged(t *testing.T) {
	e := newEnv(t)
	ts := testsys.NewWS(t)
	c := newConv(1, "/unstored")
	for _, p := range []string{"one", "two"} {
		c.add(proto.ClientToServer, proto.OpText, []byte(p))
	}
	e.publish(c.entries("websocket")...)
	args := []string{"--target", ts.URL(), "--compare=false", "--ack-wait", "2s"}
	first := e.startReplay(func(cfg *Config) {
		cfg.ResultsSubjFn = func(uint32, int) string { return "tapline.unstored.results" }
	}, args...)
	ts.Wait(t, 30*time.Second, "both messages", func(rs []testsys.Record) bool { return len(rs) == 2 })
	deadline := time.Now().Add(30 * time.Second)
	for first.counter("tapline_replay_errors_total", "kind", "results") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no result failed to be stored: the test proves nothing")
		}
		time.Sleep(50 * time.Millisecond)
	}
	first.stop(t)
	if rs := storedResults(t, e.js); len(rs) != 0 {
		t.Fatalf("%d results stored by the first replay, want none", len(rs))
	}
	e.startReplay(nil, args...)
	rs := waitStored(t, e, []*conv{c})
	for id, n := range messageResults(rs) {
		if n != 1 {
			t.Errorf("message %s has %d stored results, want 1", id, n)
		}
	}
	if n := len(ts.Records()); n != 2 {
		t.Errorf("the test system read %d messages, want 2 (each once)", n)
	}
	waitAcked(t, e, "tapline-replay")
}
