package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// TestDecompressionBomb: a production client sends, with
// permessage-deflate, a small message, 64 MiB of zeros (about 64 KB on
// the wire), a genuine 4 MiB message and a small one. reassemble's default
// --max-inflation-ratio flags the bomb inflation-limit after at most 1 MiB
// and publishes the others exact; replay skips the flagged one like any
// incomplete message; the ledger balances with it counted as flagged.
func TestDecompressionBomb(t *testing.T) {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{})
	pmd := &websocket.AcceptOptions{CompressionMode: websocket.CompressionNoContextTakeover}
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, pmd, true)
	testSrv := StartServer(t, lab.Target, mirrorlab.TargetAddr, nil, true)
	p := NewPipeline(t, lab, PipelineOptions{Target: "ws://" + testSrv.Addr.String()})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Dial(ctx, lab.Prod, "ws://"+ext.Addr.String()+"/bomb",
		&websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _, _ = c.Read(ctx) }()
	rng := rand.New(rand.NewPCG(1, 2))
	var genuine bytes.Buffer
	for genuine.Len() < 4<<20 {
		fmt.Fprintf(&genuine, `{"px":%d,"qty":%d},`, rng.Int64N(1e9), rng.Int64N(1e6))
	}
	var sent []Msg
	for _, m := range []struct {
		src   io.Reader
		frame int
	}{
		{bytes.NewReader([]byte("hello")), 1 << 10},
		{bytes.NewReader(make([]byte, 64<<20)), 1 << 20},
		{bytes.NewReader(genuine.Bytes()), 64 << 10},
		{bytes.NewReader([]byte("after")), 1 << 10},
	} {
		msg, err := send(ctx, c, websocket.MessageBinary, m.src, m.frame)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, msg)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")

	var prod *ServerConn
	waitFor(t, 2*time.Minute, "production server", func() error {
		for _, sc := range ext.Conns() {
			if len(sc.Received()) == len(sent) {
				prod = sc
				return nil
			}
		}
		return errors.New("not yet")
	})
	requireSame(t, "production server", sent, prod.Received())

	deliveries := func() []ledger.Delivery {
		var out []ledger.Delivery
		for _, sc := range testSrv.Conns() {
			out = append(out, ledgerMsgs(sc.Received())...)
		}
		return out
	}
	rep := p.Ledger(LedgerCheck{Prod: []ledger.Production{production(prod.Remote, ext.Addr.String(), proto.ClientToServer, prod.Received())},
		Opts: ledger.Options{ReplayDir: proto.ClientToServer}, Deliveries: deliveries})
	if rep.Exact != 3 || rep.Flagged[proto.ReasonInflationLimit] != 1 || rep.Lost != 0 {
		t.Errorf("%s: want 3 exact and the bomb flagged %s", rep.Summary(), proto.ReasonInflationLimit)
	}
	var got []Msg
	waitFor(t, 2*time.Minute, "test system", func() error {
		got = got[:0]
		for _, sc := range testSrv.Conns() {
			got = append(got, sc.Received()...)
		}
		if len(got) < 3 {
			return fmt.Errorf("%d of 3 messages", len(got))
		}
		return nil
	})
	requireSame(t, "test system", []Msg{sent[0], sent[2], sent[3]}, got)

	es, err := p.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var published int64
	for _, e := range es {
		if e.Kind == proto.KindData && e.Chunk.Dir == proto.ClientToServer && e.Chunk.Opcode != proto.OpClose {
			published += int64(e.Size)
			if e.Chunk.Last && e.Chunk.Reason == proto.ReasonInflationLimit {
				t.Logf("bomb: %d bytes sent, %d compressed bytes on the wire, %d published", sent[1].Size, e.Chunk.WireSize, e.Chunk.Size)
				if e.Chunk.WireSize > 128<<10 {
					t.Errorf("the bomb took %d bytes on the wire: not a decompression bomb", e.Chunk.WireSize)
				}
			}
		}
	}
	if max := int64(1<<20 + genuine.Len() + 10); published > max {
		t.Errorf("the messages stream grew by %d bytes of client messages, want at most %d", published, max)
	}
	if v, err := p.Metric("reassemble", "tapline_reassemble_inflation_limited_messages_total"); err != nil || v != 1 {
		t.Errorf("tapline_reassemble_inflation_limited_messages_total = %v (%v), want 1", v, err)
	}
}
