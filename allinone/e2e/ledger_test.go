package e2e

import (
	"context"
	"fmt"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
)

// opcode is the wire contract's name of a WebSocket message type.
func opcode(t websocket.MessageType) string {
	if t == websocket.MessageText {
		return proto.OpText
	}
	return proto.OpBinary
}

// ledgerMsg is m as the ledger identifies it.
func ledgerMsg(m Msg) ledger.Msg {
	return ledger.Msg{Opcode: opcode(m.Type), Size: m.Size, SHA256: m.SHA}
}

// ledgerMsgs are complete deliveries of msgs.
func ledgerMsgs(msgs []Msg) []ledger.Delivery {
	out := make([]ledger.Delivery, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, ledger.Delivery{Msg: ledgerMsg(m)})
	}
	return out
}

// production is what production received on one connection (client
// address, server address) in one direction.
func production(client, server string, dir proto.Direction, msgs []Msg) ledger.Production {
	p := ledger.Production{Key: ledger.Key{Client: client, Server: server}, Dir: dir}
	for _, m := range msgs {
		p.Msgs = append(p.Msgs, ledgerMsg(m))
	}
	return p
}

// LedgerCheck is what a test hands to Pipeline.Ledger.
type LedgerCheck struct {
	Prod []ledger.Production
	// Deliveries returns what the test system received so far.
	Deliveries func() []ledger.Delivery
	Opts       ledger.Options
	// Bounds computes the loss report's bounds from the lab's counters
	// and the frames stream (nil: DropBounds).
	Bounds func(lost, tbfDrops int64) *ledger.Bounds
	// Settle is how long nothing may change before an unbalanced ledger
	// fails (default 20 s): longer than every timeout the stages were
	// given, so nothing is still in flight.
	Settle time.Duration
}

// mss is the TCP payload one mirrored packet can carry in the lab (MTU
// 1500 - 40 bytes of headers).
const mss = 1460

// DropBounds is the default bound of the loss report: at most one MSS per
// packet the mirror path lost (mirrored by tc but never stored in
// TAPLINE_FRAMES: token bucket, receive buffers, decap down), and nothing
// reported missing when nothing was lost.
func DropBounds(lost, _ int64) *ledger.Bounds {
	return &ledger.Bounds{Lo: 0, Hi: lost * mss, Why: fmt.Sprintf("%d packets mirrored but not in TAPLINE_FRAMES × %d", lost, mss)}
}

// Ledger waits until the pipeline is quiescent (every connection closed,
// nothing new on TAPLINE_MSGS, TAPLINE_RESULTS or at the test system for
// a while) and balances the ledger; it fails the test with the report
// unless it balances. It returns the report.
func (p *Pipeline) Ledger(c LedgerCheck) *ledger.Report {
	t := p.t
	t.Helper()
	if c.Bounds == nil {
		c.Bounds = DropBounds
	}
	settle := c.Settle
	if settle == 0 {
		settle = 20 * time.Second
	}
	deadline := time.Now().Add(6 * time.Minute)
	var last string
	lastChange := time.Now()
	for {
		rep, state, err := p.reconcile(c)
		if err != nil {
			t.Logf("ledger: %v", err)
		} else if rep.OK() {
			t.Log(rep.String())
			return rep
		}
		if state != last {
			last, lastChange = state, time.Now()
		}
		if err == nil && (time.Since(lastChange) > settle || time.Now().After(deadline)) {
			t.Errorf("the ledger does not balance (quiescent for %v: %s):\n%s", time.Since(lastChange).Round(time.Second), state, rep)
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger: %v", err)
		}
		time.Sleep(2 * time.Second)
	}
}

// reconcile reads the streams and the lab's counters once and reconciles;
// state summarises what was read, to tell when nothing moves any more.
func (p *Pipeline) reconcile(c LedgerCheck) (*ledger.Report, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := ledger.ReadStream(ctx, p.JS)
	if err != nil {
		return nil, "", err
	}
	res, err := ledger.ReadResults(ctx, p.JS)
	if err != nil {
		return nil, "", err
	}
	frames, err := p.StreamFrames()
	if err != nil {
		return nil, "", err
	}
	cnt, err := p.Lab.Counters()
	if err != nil {
		return nil, "", err
	}
	got := c.Deliveries()
	o := c.Opts
	lost := int64(cnt.MirredPackets) - int64(frames)
	o.Bounds = c.Bounds(lost, int64(cnt.TBFDrops))
	rep := ledger.Reconcile(c.Prod, s, res, got, o)
	state := fmt.Sprintf("msgs %d entries, results %d, test system %d, frames %d, mirrored %d (tbf drops %d, rcvbuf %d)",
		s.Entries(), res.Len(), len(got), frames, cnt.MirredPackets, cnt.TBFDrops, cnt.TargetUDP.RcvbufErrors)
	return rep, state, nil
}
