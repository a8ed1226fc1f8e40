package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemo runs `tapline demo` in-process: the all-in-one on loopback,
// decap send of the bundled captures, replay into the test system, the
// loss summaries and the archive query.
func TestDemo(t *testing.T) {
	var out syncBuf
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Dir: t.TempDir(), Out: &out, Timeout: 2 * time.Minute, Stall: time.Minute, LogLevel: "warn"})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	// ws-broker-json.pcap: the client sends a subscription and three JSON
	// data messages (expected/ws-broker-json.messages.tsv); replay
	// delivers them to the test system in order.
	var sizes []int
	for _, m := range rep.Received {
		if m.Path == "/v1/messages/json" {
			sizes = append(sizes, m.Size)
		}
	}
	if want := []int{24, 361, 361, 361}; !equal(sizes, want) {
		t.Errorf("test system received sizes %v on /v1/messages/json, want %v", sizes, want)
	}
	if rep.Sent.Packets != 49 {
		t.Errorf("decap send sent %d datagrams, want 49", rep.Sent.Packets)
	}
	if len(rep.Opens) != 2 || len(rep.Closes) != 2 {
		t.Fatalf("opens %d closes %d, want 2 and 2", len(rep.Opens), len(rep.Closes))
	}
	for _, c := range rep.Closes {
		for _, d := range []proto.DirLoss{c.C2S, c.S2C} {
			if d.BytesMissing != 0 || d.MessagesIncomplete != 0 || d.BytesSeen != d.BytesImplied {
				t.Errorf("loss on a lossless loopback: %+v", c)
			}
		}
	}
	if rep.Incomplete != 0 || rep.Gaps != 0 {
		t.Errorf("incomplete %d gaps %d, want 0", rep.Incomplete, rep.Gaps)
	}
	if rep.Results["sent"] < 4 {
		t.Errorf("replay results %v: want at least 4 sent", rep.Results)
	}
	// The narrative's counts agree with each other: replay's "sent" counts
	// the client messages the test system received (not close frames or
	// connection summaries), the test system's connections include those
	// that carried no message, each step number appears once.
	if rep.Results["sent"] != len(rep.Received) {
		t.Errorf("replay reports %d messages sent, the test system received %d", rep.Results["sent"], len(rep.Received))
	}
	if !strings.Contains(out.String(), "on 2 connections") {
		t.Errorf("demo output does not count the test system's 2 connections")
	}
	if got := rep.Messages[proto.ClientToServer]; got != 4 {
		t.Errorf("reassembled %d client messages, want the 4 data messages (a close frame is no message)", got)
	}
	for _, step := range []string{"  1. ", "  2. ", "  3. ", "  4. "} {
		if n := strings.Count(out.String(), step); n != 1 {
			t.Errorf("step %q printed %d times", strings.TrimSpace(step), n)
		}
	}
	if rep.Query.Packets != rep.Sent.Packets {
		t.Errorf("archive query returned %d packets, decap send sent %d", rep.Query.Packets, rep.Sent.Packets)
	}
	if _, err := exec.LookPath("tshark"); err == nil {
		if n := len(strings.Split(strings.TrimSpace(rep.TShark), "\n")); n != int(rep.Sent.Packets) {
			t.Errorf("tshark -r shows %d packets, want %d", n, rep.Sent.Packets)
		}
	}
	for _, want := range []string{"What the test system received", "What the mirror lost", "closed normally (FIN)", "tshark -r"} {
		if !strings.Contains(out.String(), want) && !(want == "tshark -r" && rep.TShark == "") {
			t.Errorf("demo output lacks %q", want)
		}
	}

	// Every metric the all-in-one exported should be documented; a metric
	// added later is reported here (not a failure: the list in
	// docs/operations.md is regenerated from the stages' code).
	ops, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rep.Metrics {
		if !strings.Contains(string(ops), "`"+m+"`") {
			t.Logf("NOTE: metric %s is not documented in docs/operations.md yet", m)
		}
	}
	if len(rep.Metrics) < 20 {
		t.Errorf("only %d tapline metrics exported: %v", len(rep.Metrics), rep.Metrics)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
