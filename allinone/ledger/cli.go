package ledger

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
)

// ExpectedLine is one line of the expected-messages file of `tapline
// ledger` (JSON lines): one message production received, in order per
// connection and direction.
type ExpectedLine struct {
	Client string          `json:"client"`
	Server string          `json:"server"`
	Dir    proto.Direction `json:"dir"`
	Msg
}

// ReadExpected reads an expected-messages file (JSON lines of
// ExpectedLine) into Productions, in order of first appearance.
func ReadExpected(r io.Reader) ([]Production, error) {
	var out []Production
	idx := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l ExpectedLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if l.Dir != proto.ClientToServer && l.Dir != proto.ServerToClient {
			return nil, fmt.Errorf("line %d: dir %q, want c2s or s2c", n, l.Dir)
		}
		k := l.Client + "|" + l.Server + "|" + string(l.Dir)
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Production{Key: Key{Client: l.Client, Server: l.Server}, Dir: l.Dir})
		}
		out[i].Msgs = append(out[i].Msgs, l.Msg)
	}
	return out, sc.Err()
}

// ReadDeliveries reads what the test system received: JSON lines of
// Delivery.
func ReadDeliveries(r io.Reader) ([]Delivery, error) {
	var out []Delivery
	dec := json.NewDecoder(r)
	for {
		var d Delivery
		err := dec.Decode(&d)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
}

// Main is `tapline ledger`: it reconciles an expected-messages file with
// TAPLINE_MSGS and TAPLINE_RESULTS (and, with --delivered, what the test
// system received), prints the report and exits 0 when the ledger
// balances, 1 when it does not, 2 on bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tapline ledger", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c stage.Common
	c.Register(fs, "")
	expected := fs.String("expected", "", "JSON lines, one per message production received: client, server, dir, opcode, size, sha256")
	delivered := fs.String("delivered", "", "JSON lines, one per message the test system received: opcode, size, sha256, aborted (default: not checked)")
	replayDir := fs.String("replay-dir", "s2c", "direction replay delivers: s2c (listen mode) or c2s (dial mode)")
	incomplete := fs.String("incomplete", "skip", "replay's --incomplete policy")
	noResults := fs.Bool("no-results", false, "replay ran with --results off: skip the TAPLINE_RESULTS checks")
	timeout := fs.Duration("timeout", 5*time.Minute, "time allowed to read the streams")
	// TAPLINE_LEDGER_TIMEOUT …: demo has a --timeout too. The NATS flags
	// keep TAPLINE_NATS_URL (and NATS_URL).
	stage.SetEnvPrefix(fs, "TAPLINE_LEDGER_")
	if err := stage.Parse(fs, args, stage.Aliases); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintf(stderr, "tapline ledger: %v\n", err)
		return 2
	}
	if *expected == "" {
		fmt.Fprintln(stderr, "tapline ledger: --expected is required")
		return 2
	}
	f, err := os.Open(*expected)
	if err != nil {
		fmt.Fprintf(stderr, "tapline ledger: %v\n", err)
		return 2
	}
	prod, err := ReadExpected(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "tapline ledger: %s: %v\n", *expected, err)
		return 2
	}
	o := Options{ReplayDir: proto.Direction(*replayDir), Incomplete: *incomplete, NoResults: *noResults, NoTestSystem: *delivered == ""}
	var got []Delivery
	if *delivered != "" {
		f, err := os.Open(*delivered)
		if err != nil {
			fmt.Fprintf(stderr, "tapline ledger: %v\n", err)
			return 2
		}
		got, err = ReadDeliveries(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "tapline ledger: %s: %v\n", *delivered, err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	nc, js, err := c.Connect(ctx, "tapline-ledger", c.Logger("ledger"))
	if err != nil {
		fmt.Fprintf(stderr, "tapline ledger: %v\n", err)
		return 2
	}
	defer nc.Close()
	s, err := ReadStream(ctx, js)
	if err != nil {
		fmt.Fprintf(stderr, "tapline ledger: %v\n", err)
		return 2
	}
	var res *Results
	if !*noResults {
		if res, err = ReadResults(ctx, js); err != nil {
			fmt.Fprintf(stderr, "tapline ledger: %v\n", err)
			return 2
		}
	}
	rep := Reconcile(prod, s, res, got, o)
	fmt.Fprint(stdout, rep.String())
	if !rep.OK() {
		return 1
	}
	return 0
}
