package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// TestDialModeVariety: 60 concurrent production connections, both
// directions mirrored, replayed in dial mode against a test server in the
// target namespace. A third send compressible text with permessage-deflate
// and context takeover, a third random binary in 1 KiB frames, a third a
// 2 MiB message (several chunks) in 1 KiB frames among smaller ones. The
// test server receives, on a connection with the original path, every
// client message byte-identical and in order.
func TestDialModeVariety(t *testing.T) {
	needLab(t)
	const conns = 60
	lab := mirrorlab.New(t, mirrorlab.Options{})
	deflate := &websocket.AcceptOptions{CompressionMode: websocket.CompressionContextTakeover}
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, deflate, true)
	testSrv := StartServer(t, lab.Target, mirrorlab.TargetAddr, nil, true)
	p := NewPipeline(t, lab, PipelineOptions{Target: "ws://" + testSrv.Addr.String()})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sent := make([][]Msg, conns)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			sent[i], err = produce(ctx, lab, ext, i)
			if err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Production's server got what the clients sent.
	byPath := map[string][]Msg{}
	for i := range conns {
		byPath[connPath(i)] = sent[i]
	}
	checkServer := func(who string, s *Server) error {
		got := map[string][]Msg{}
		all := s.Conns()
		for _, sc := range all {
			got[sc.Path] = append(got[sc.Path], sc.Received()...)
		}
		for path, want := range byPath {
			if len(got[path]) < len(want) {
				return fmt.Errorf("%s (%d connections): %s has %d of %d messages", who, len(all), path, len(got[path]), len(want))
			}
		}
		return nil
	}
	waitFor(t, time.Minute, "production server", func() error { return checkServer("production", ext) })
	// The ledger balances with every message exact: every connection
	// closed without loss, the compressed ones were decoded.
	var prod []ledger.Production
	for _, sc := range ext.Conns() {
		prod = append(prod, production(sc.Remote, ext.Addr.String(), proto.ClientToServer, sc.Received()))
	}
	rep := p.Ledger(LedgerCheck{Prod: prod, Opts: ledger.Options{ReplayDir: proto.ClientToServer},
		Deliveries: func() []ledger.Delivery {
			var out []ledger.Delivery
			for _, sc := range testSrv.Conns() {
				out = append(out, ledgerMsgs(sc.Received())...)
			}
			return out
		}})
	if rep.Exact != rep.Produced || rep.BytesMissing != 0 {
		t.Errorf("%s: want every message exact", rep.Summary())
	}
	es, err := p.Entries()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 4*time.Minute, "test server", func() error { return checkServer("test server", testSrv) })
	for _, s := range []*Server{ext, testSrv} {
		for _, sc := range s.Conns() {
			requireSame(t, sc.Path, byPath[sc.Path], sc.Received())
		}
	}
	if n := len(testSrv.Conns()); n != conns {
		t.Errorf("test server accepted %d connections, want %d (one per original connection)", n, conns)
	}

	compressed := 0
	for _, e := range es {
		if e.Kind == proto.KindData && e.Chunk.Last && e.Chunk.Compressed {
			compressed++
		}
		if e.Open != nil && e.Open.MidStream {
			t.Errorf("open event %s says mid_stream, the handshake was mirrored", e.Open.Conn)
		}
	}
	if compressed == 0 {
		t.Errorf("no message was marked compressed: permessage-deflate was not exercised")
	}
	requireArchiveComplete(t, p)
}

func connPath(i int) string { return fmt.Sprintf("/conn/%d", i) }

// produce runs production connection i from prod to ext and returns what
// it sent.
func produce(ctx context.Context, lab *mirrorlab.Lab, ext *Server, i int) ([]Msg, error) {
	var opts websocket.DialOptions
	if i%3 == 0 {
		opts.CompressionMode = websocket.CompressionContextTakeover
	}
	c, err := Dial(ctx, lab.Prod, "ws://"+ext.Addr.String()+connPath(i), &opts)
	if err != nil {
		return nil, err
	}
	defer c.CloseNow()
	// Read in the background so the close handshake completes.
	go func() { _, _, _ = c.Read(ctx) }()
	var out []Msg
	for j := range 8 {
		var m Msg
		seed := uint64(i*100 + j)
		switch i % 3 {
		case 0:
			m, err = send(ctx, c, websocket.MessageText, payload("text", seed, int64(4<<10+j*8<<10)), 4<<10)
		case 1:
			m, err = send(ctx, c, websocket.MessageBinary, payload("binary", seed, int64(1<<10+j*12<<10)), 1<<10)
		default:
			size := int64(16<<10 + j*1000)
			if j == 4 {
				size = 2 << 20
			}
			m, err = send(ctx, c, websocket.MessageBinary, payload("binary", seed, size), 1<<10)
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
	return out, c.Close(websocket.StatusNormalClosure, "done")
}

// logConn logs the entries of one connection (for failures).
func logConn(t testing.TB, es []Entry, conn string) {
	t.Helper()
	for _, e := range es {
		switch {
		case e.Open != nil && e.Open.Conn == conn:
			t.Logf("  open %+v", *e.Open)
		case e.Gap != nil && e.Gap.Conn == conn:
			t.Logf("  gap %+v", *e.Gap)
		case e.Kind == proto.KindData && e.Chunk.Conn == conn:
			c := e.Chunk
			t.Logf("  data %s seq %d chunk %d last %v %s complete %v missing %d compressed %v size %d body %d",
				c.Dir, c.Seq, c.Index, c.Last, c.Opcode, c.Complete, c.Missing, c.Compressed, c.Size, e.Size)
		}
	}
}
