package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
	"github.com/tapline/tapline/proto/tlstest"
)

// keysHTTP is where `decap keys` serves /healthz inside the production
// namespace.
const keysHTTP = "127.0.0.1:9107"

// labCert is a self-signed certificate for the external system's address
// and name in the lab, and a pool that trusts it.
func labCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := tlstest.SelfSigned(t, "ext.tapline.lab", mirrorlab.ExtAddr.String())
	return c.TLS, c.Pool()
}

// dialTLS opens a wss:// connection from inside ns, trusting pool and
// writing the session's secrets to keyLog (NSS key log format), as a
// production client with SSLKEYLOGFILE does.
func dialTLS(ctx context.Context, ns, url string, pool *x509.CertPool, keyLog *os.File) (*websocket.Conn, error) {
	var ec *endConn
	tr := &http.Transport{
		DialContext:     endDialer(mirrorlab.DialContext(ns), &ec),
		TLSClientConfig: &tls.Config{RootCAs: pool, KeyLogWriter: keyLog, ServerName: "ext.tapline.lab"},
	}
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		return nil, err
	}
	watchEnd(c, ec)
	c.SetReadLimit(-1)
	return c, nil
}

// startKeys runs `decap keys --follow` in the production namespace,
// shipping path to the pipeline's NATS in the target namespace, and waits
// until it is healthy.
func startKeys(t *testing.T, p *Pipeline, path string) *Proc {
	t.Helper()
	return startProdDecap(t, p, "keys", keysHTTP, []string{"keys", "--follow", "--source", "prod",
		"--nats-url", "nats://" + mirrorlab.TargetAddr.String() + ":4222",
		"--http", keysHTTP, "--log-level", "info", path})
}

// testSystem is a Collector or a Reconnecting test system.
type testSystem interface {
	Msgs() []Msg
	Deliveries() []ledger.Delivery
}

// waitMsgs waits until ts received n messages.
func waitMsgs(ctx context.Context, ts testSystem, n int) ([]Msg, error) {
	if c, ok := ts.(*Collector); ok {
		return c.Wait(ctx, n)
	}
	for {
		if got := ts.Msgs(); len(got) >= n {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return ts.Msgs(), fmt.Errorf("%d of %d messages: %w", len(ts.Msgs()), n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tlsPush is one run of the TLS motivating case.
type tlsPush struct {
	p    *Pipeline
	ext  *Server
	sc   *ServerConn
	ts   testSystem
	sent []Msg
	push time.Duration
	// relay dropped a mirror packet (nil without one)
	relay *dropRelay
}

// tlsKeys says when the key shipper starts: before the push, some time
// after it began, or never; and which mirror packet is lost.
type tlsKeys struct {
	delay time.Duration
	never bool
	// dropNth > 0: a relay in front of decap drops the dropNth mirror
	// packet that carries TCP payload (and forwards the rest).
	dropNth int
	// tbf shapes the mirror link (congestion drops mirror packets).
	tbf *mirrorlab.TBF
}

// runTLSPush builds the lab (inbound-only mirroring), the pipeline with
// extra reassemble flags, a wss:// external system and a production client
// that logs its keys to a file, ships them as k says, and pushes the seed
// messages.
func runTLSPush(t *testing.T, k tlsKeys, reassemble ...string) *tlsPush {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true, TBF: k.tbf})
	cert, pool := labCert(t)
	ext := startServer(t, lab.Ext, mirrorlab.ExtAddr, nil, false,
		&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	extra := map[string][]string{"reassemble": reassemble}
	var rl *dropRelay
	if k.dropNth > 0 {
		// decap listens behind the relay (the last --vxlan-port wins).
		rl = startDropRelay(t, lab, k.dropNth, relayPort)
		extra["decap"] = []string{"--vxlan-port", strconv.Itoa(relayPort)}
	}
	p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String(), NATSHost: "0.0.0.0", Extra: extra})
	var ts testSystem
	if k.dropNth > 0 || k.tbf != nil {
		// replay aborts the flagged message's connection (1011): the
		// test system connects again.
		ts = ConnectReconnecting(t, p, replayListen)
	} else {
		ts = ConnectTestSystem(t, p, replayListen)
	}

	keyPath := filepath.Join(p.Dir, "prod-sslkeylog.txt")
	keyLog, err := os.OpenFile(keyPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keyLog.Close() })
	if !k.never && k.delay == 0 {
		startKeys(t, p, keyPath)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := dialTLS(ctx, lab.Prod, "wss://"+ext.Addr.String()+"/feed", pool, keyLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	prod := Collect(c)
	conns, err := ext.Accepted(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	sc := conns[0]
	start := time.Now()
	var keysStarted chan struct{}
	if !k.never && k.delay > 0 {
		keysStarted = make(chan struct{})
		go func() {
			defer close(keysStarted)
			time.Sleep(k.delay)
			startKeys(t, p, keyPath)
		}()
	}
	var sent []Msg
	for i, size := range seedSizes {
		m, err := send(ctx, sc.C, websocket.MessageBinary, payload("binary", uint64(i), size), 64<<10)
		if err != nil {
			t.Fatalf("production send %d: %v", i, err)
		}
		sent = append(sent, m)
	}
	got, err := prod.Wait(ctx, len(sent))
	if err != nil {
		t.Fatal(err)
	}
	push := time.Since(start)
	requireSame(t, "production client", sent, got)
	if keysStarted != nil {
		<-keysStarted
	}
	var total int64
	for _, m := range sent {
		total += m.Size
	}
	t.Logf("push of %d messages, %d bytes, took %v over TLS (keys delay %v, never %v, drop %d, tbf %v)",
		len(sent), total, push.Round(time.Millisecond), k.delay, k.never, k.dropNth, k.tbf != nil)
	// The external system ends the connection without a close handshake:
	// its close_notify and FIN are mirrored before production can answer.
	// (A close handshake races: when production has closed before the
	// external system's close_notify reaches it, production answers with a
	// RST, outbound and never mirrored, and the external system's socket
	// is gone before it sends its FIN; with inbound-only mirroring
	// reassemble then sees no end of the connection until its idle
	// timeout.)
	_ = sc.C.CloseNow()
	return &tlsPush{p: p, ext: ext, sc: sc, ts: ts, sent: sent, push: push, relay: rl}
}

// prod is what production received, for the ledger.
func (r *tlsPush) prod() []ledger.Production {
	return []ledger.Production{production(r.sc.Remote, r.ext.Addr.String(), proto.ServerToClient, r.sent)}
}

// requireTLSExact: the test system received every message byte-identical,
// the ledger balances with every message exact, and the connection was
// decrypted (TLS open event, nothing undecryptable).
func (r *tlsPush) requireTLSExact(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	tsGot, err := waitMsgs(ctx, r.ts, len(r.sent))
	if err != nil {
		t.Fatalf("test system: %v", err)
	}
	requireSame(t, "test system", r.sent, tsGot)
	t.Logf("test system had every message %v after the push ended", time.Since(start).Round(time.Millisecond))
	rep := r.p.Ledger(LedgerCheck{Prod: r.prod(), Deliveries: r.ts.Deliveries})
	if rep.Exact != len(r.sent) || rep.BytesMissing != 0 {
		t.Errorf("%s: want every message exact and nothing missing", rep.Summary())
	}
	open, cl := r.tlsEvents(t)
	if open == nil || open.Undecryptable || !open.ClientHelloMissing || open.Version != "TLS 1.3" {
		t.Errorf("open event tls %+v: want TLS 1.3, client hello missing (inbound only), decrypted", open)
	}
	if cl == nil || cl.Undecryptable || cl.S2C.RecordsUndecryptable != 0 || cl.S2C.RecordsLost != 0 || cl.S2C.Records == 0 {
		t.Errorf("close event tls %+v: want every server record decrypted", cl)
	}
	requireArchiveMirrored(t, r.p, 0)
}

// tlsEvents returns the tls objects of the connection's open and close
// events (the last of each).
func (r *tlsPush) tlsEvents(t *testing.T) (*proto.TLSInfo, *proto.TLSClose) {
	t.Helper()
	es, err := r.p.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var open *proto.TLSInfo
	var cl *proto.TLSClose
	for _, e := range es {
		if e.Open != nil && e.Open.TLS != nil {
			open = e.Open.TLS
		}
		if e.Close != nil && e.Close.TLS != nil {
			cl = e.Close.TLS
		}
	}
	return open, cl
}

// TestTLSMotivating is the motivating case over wss://: the external
// system pushes 1, 10 and 100 MB to a production client that logs its TLS
// keys; only inbound traffic is mirrored; `decap keys --follow` ships the
// key log from the production namespace; the test system receives every
// message byte-identical and the ledger balances.
func TestTLSMotivating(t *testing.T) {
	r := runTLSPush(t, tlsKeys{})
	r.requireTLSExact(t)
}

// TestTLSKeysDelayed: the key shipper starts 5 s after the push began;
// reassemble holds the ciphertext until the keys arrive (a hold budget
// large enough for the whole push) and every message is still exact.
func TestTLSKeysDelayed(t *testing.T) {
	r := runTLSPush(t, tlsKeys{delay: 5 * time.Second}, "--tls-hold-bytes", "201326592")
	r.requireTLSExact(t)
}

// requireArchiveMirrored waits until the archive holds every packet the
// VXLAN device encapsulated (less the target's receive buffer drops).
// Unlike requireArchiveComplete it does not count mir0's packets: `decap
// keys` in the production namespace reaches NATS over that link too.
func requireArchiveMirrored(t testing.TB, p *Pipeline, dropped uint64) {
	t.Helper()
	var last string
	waitFor(t, 3*time.Minute, "archive complete", func() error {
		c, err := p.Lab.Counters()
		if err != nil {
			return err
		}
		n, err := p.ArchivePackets()
		if err != nil {
			return err
		}
		want := c.VXLAN.TxPackets - c.TargetUDP.RcvbufErrors - dropped
		last = fmt.Sprintf("archive %d packets, vxlan sent %d, target rcvbuf drops %d", n, c.VXLAN.TxPackets, c.TargetUDP.RcvbufErrors)
		if uint64(n) != want {
			time.Sleep(500 * time.Millisecond)
			return errors.New(last)
		}
		if c.TargetUDP.RcvbufErrors != 0 {
			t.Errorf("target UDP sockets dropped %d datagrams", c.TargetUDP.RcvbufErrors)
		}
		return nil
	})
	t.Log(last)
}

// TestTLSKeysNeverSent: no key shipper runs. Nothing reaches the test
// system, the connection is reported undecryptable in its open and close
// events, and the ledger accounts every message as reported undecryptable
// (not lost silently, not delivered).
func TestTLSKeysNeverSent(t *testing.T) {
	r := runTLSPush(t, tlsKeys{never: true}, "--tls-hold-time", "2s")
	rep := r.p.Ledger(LedgerCheck{Prod: r.prod(), Deliveries: r.ts.Deliveries})
	if rep.Undecryptable != len(r.sent) || rep.Exact != 0 || rep.Delivered != 0 {
		t.Errorf("%s: want every message reported undecryptable, none delivered", rep.Summary())
	}
	if got := r.ts.Msgs(); len(got) != 0 {
		t.Errorf("test system received %d messages of a connection without keys", len(got))
	}
	es, err := r.p.Entries()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Kind == proto.KindData {
			t.Errorf("data entry %+v published for a connection without keys", e.Chunk)
		}
	}
	open, cl := r.tlsEvents(t)
	if open == nil || !open.Undecryptable {
		t.Errorf("open event tls %+v: want undecryptable", open)
	}
	if cl == nil || !cl.Undecryptable || cl.S2C.RecordsUndecryptable == 0 || cl.S2C.PlaintextLost == 0 {
		t.Errorf("close event tls %+v: want undecryptable server records", cl)
	}
	requireArchiveMirrored(t, r.p, 0)
}

// TestTLSMirrorPacketDropped: one mirror packet inside a TLS record of the
// 10 MB message is lost on the way to decap. That message is flagged, the
// 1 MB before it and the 100 MB after it are exact at the test system, and
// the loss report is that packet's payload.
func TestTLSMirrorPacketDropped(t *testing.T) {
	// Packet 3000 with payload is well inside the 10 MB message (the 1 MB
	// one is about 730 packets of 1448 bytes).
	r := runTLSPush(t, tlsKeys{dropNth: 3000})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	want := []Msg{r.sent[0], r.sent[2]}
	tsGot, err := waitMsgs(ctx, r.ts, len(want))
	if err != nil {
		t.Fatalf("test system: %v", err)
	}
	requireSame(t, "test system", want, tsGot)
	if r.relay.dropped.Load() != 1 {
		t.Fatalf("relay dropped %d packets, want 1", r.relay.dropped.Load())
	}
	rep := r.p.Ledger(LedgerCheck{Prod: r.prod(), Deliveries: r.ts.Deliveries})
	flagged := 0
	for _, n := range rep.Flagged {
		flagged += n
	}
	if rep.Exact != 2 || flagged != 1 || rep.Flagged[proto.ReasonGap] != 1 || rep.BytesMissing == 0 || rep.BytesMissing > mss {
		t.Errorf("%s: want 2 exact, the 10 MB message flagged (gap), one packet's payload missing", rep.Summary())
	}
	_, cl := r.tlsEvents(t)
	if cl == nil || cl.S2C.RecordsLost == 0 || cl.S2C.RecordsUndecryptable != 0 {
		t.Errorf("close event tls %+v: want records lost to the gap, none undecryptable", cl)
	}
	requireArchiveMirrored(t, r.p, 1)
}

// TestTLSCongestion: a token bucket on the mirror link drops mirror
// packets during the wss:// push. Whatever reaches the test system is
// byte-identical and in order, and the ledger balances: every message is
// exact, flagged or reported lost, the loss report within what tc dropped.
func TestTLSCongestion(t *testing.T) {
	// 100 Mbit/s: below what even a loaded machine pushes (116 MB took 4.8 s,
	// about 195 Mbit/s, under heavy load), so the bucket always drops.
	// The bucket may drop the FIN and the close_notify too: the idle
	// timeout then ends the connection, inside the ledger's settle time.
	r := runTLSPush(t, tlsKeys{tbf: &mirrorlab.TBF{Rate: "100mbit", Burst: "256kb", Limit: "256kb"}}, "--idle-timeout", "20s")
	rep := r.p.Ledger(LedgerCheck{Prod: r.prod(), Deliveries: r.ts.Deliveries, Settle: 45 * time.Second})
	requireSubsequence(t, r.sent, r.ts.Msgs())
	c, err := r.p.Lab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.TBFDrops == 0 {
		t.Fatalf("the token bucket dropped nothing: no congestion to test")
	}
	t.Logf("token bucket dropped %d of %d mirror packets; %s", c.TBFDrops, c.MirredPackets, rep.Summary())
	_, cl := r.tlsEvents(t)
	if cl == nil || cl.S2C.RecordsUndecryptable != 0 {
		t.Errorf("close event tls %+v: want no record undecryptable (the keys came)", cl)
	}
}
