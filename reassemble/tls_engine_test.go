package reassemble

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/tlstest"
)

// tlsRec records what one side wrote: its direction's TCP byte stream.
type tlsRec struct {
	net.Conn
	mu     *sync.Mutex
	buf    *bytes.Buffer
	dir    int
	writes *[]tlsWrite
}

// tlsWrite is one write of either side, in the order they happened.
type tlsWrite struct {
	dir int
	n   int
}

func (r tlsRec) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(b)
	*r.writes = append(*r.writes, tlsWrite{r.dir, len(b)})
	r.mu.Unlock()
	return r.Conn.Write(b)
}

// oneListener accepts one connection.
type oneListener struct {
	c    chan net.Conn
	done chan struct{}
}

func (l *oneListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, errors.New("closed")
	}
}
func (l *oneListener) Close() error   { return nil }
func (l *oneListener) Addr() net.Addr { return &net.TCPAddr{} }

// wssCapture is a wss:// push from a coder/websocket server to a
// coder/websocket client over Go's crypto/tls (the client logs its keys):
// the TCP byte streams of both directions and the messages pushed.
type wssCapture struct {
	c2s, s2c []byte
	keylog   []byte
	msgs     [][]byte
	writes   []tlsWrite
}

func captureWSS(t testing.TB, sizes []int, mode websocket.CompressionMode) *wssCapture {
	t.Helper()
	cert := tlstest.SelfSigned(t, "feed.example").TLS
	cp := &wssCapture{}
	for i, n := range sizes {
		m := pattern(n, byte(i+1))
		for j := 0; j < len(m); j += 3 {
			m[j] = 'a' // compressible in part
		}
		cp.msgs = append(cp.msgs, m)
	}
	var mu sync.Mutex
	var c2s, s2c, kl bytes.Buffer
	a, b := net.Pipe()
	ln := &oneListener{c: make(chan net.Conn, 1), done: make(chan struct{})}
	ln.c <- tls.Server(tlsRec{b, &mu, &s2c, 1, &cp.writes}, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	served := make(chan error, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: mode})
		if err != nil {
			served <- err
			return
		}
		for _, m := range cp.msgs {
			if err := c.Write(r.Context(), websocket.MessageBinary, m); err != nil {
				served <- err
				return
			}
		}
		c.Close(websocket.StatusNormalClosure, "done") // its close-notify may find the pipe closed
		served <- nil
	})}
	go srv.Serve(ln)
	defer close(ln.done)
	cliTLS := &tls.Config{InsecureSkipVerify: true, ServerName: "feed.example", NextProtos: []string{"http/1.1"},
		KeyLogWriter: writerOf(func(p []byte) { mu.Lock(); kl.Write(p); mu.Unlock() })}
	used := false
	hc := &http.Client{Transport: &http.Transport{DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		if used {
			return nil, errors.New("one connection only")
		}
		used = true
		c := tls.Client(tlsRec{a, &mu, &c2s, 0, &cp.writes}, cliTLS)
		return c, c.HandshakeContext(ctx)
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss://feed.example/feed", &websocket.DialOptions{HTTPClient: hc, CompressionMode: mode})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(64 << 20)
	for i := range cp.msgs {
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, cp.msgs[i]) {
			t.Fatalf("message %d differs at the client", i)
		}
	}
	_, _, err = c.Read(ctx) // the close frame
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("close: %v", err)
	}
	c.CloseNow()
	go io.Copy(io.Discard, a) // the server's last writes
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	a.Close()
	mu.Lock()
	defer mu.Unlock()
	cp.c2s, cp.s2c, cp.keylog = bytes.Clone(c2s.Bytes()), bytes.Clone(s2c.Bytes()), bytes.Clone(kl.Bytes())
	return cp
}

type writerOf func([]byte)

func (f writerOf) Write(p []byte) (int, error) { f(p); return len(p), nil }

// tlsRun feeds a capture through the engine as TCP segments of 1448
// bytes (segments of the s2c stream at the offsets in drop left out),
// with the key log published to TAPLINE_KEYS before (keyDelay 0), after
// keyDelay, or never (keyDelay < 0).
type tlsRun struct {
	holdTime  time.Duration
	maxMemory int64
	keyDelay  time.Duration
	dropS2C   []int // stream offsets whose segment is dropped
	s2cOnly   bool  // inbound-only mirroring of the client: no handshake, no client packets
	noFIN     bool  // no FIN mirrored (the production client answered with an RST, not mirrored)
	startAt   int   // frames before this index not mirrored (the capture started mid-connection)
}

func runTLS(t *testing.T, cp *wssCapture, r tlsRun) (*connOut, *prometheus.Registry) {
	t.Helper()
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	cfg := testConfig(url, 2, "tls")
	cfg.NewDecoder = nil
	cfg.IdleTimeout = time.Hour
	cfg.TLS, cfg.TLSHoldBytes, cfg.TLSHoldTime, cfg.TLSMaxKeys, cfg.TLSKeyMaxAge = true, 64<<20, 30*time.Second, 1000, time.Hour
	if r.holdTime > 0 {
		cfg.TLSHoldTime = r.holdTime
	}
	if r.maxMemory > 0 {
		cfg.MaxMemory = r.maxMemory
	}
	ctx := context.Background()
	if err := proto.EnsureStreams(ctx, js, testStreams, proto.KeysStream); err != nil {
		t.Fatal(err)
	}
	pubKeys := func() {
		if _, err := js.Publish(ctx, proto.KeysSubject("prod-1.example"), cp.keylog); err != nil {
			t.Fatal(err)
		}
	}
	if r.keyDelay == 0 {
		pubKeys()
	}
	_, reg := startEngineReg(t, cfg)
	b := newBatcher(t, js, 64)
	for i, f := range tlsFrames(t, cp.writes, [2][]byte{cp.c2s, cp.s2c}, r.dropS2C) {
		if i < r.startAt {
			continue
		}
		if r.s2cOnly && (f.Data[47]&0x02 != 0 || bytes.Equal(f.Data[26:30], []byte{10, 9, 0, 1})) {
			continue // SYNs and every packet from the client
		}
		if r.noFIN && f.Data[47]&0x01 != 0 {
			continue
		}
		b.add(&f, shardOf(t, &f, 2))
	}
	b.flush()
	if r.keyDelay > 0 {
		time.Sleep(r.keyDelay)
		pubKeys()
	}
	waitFor(t, "close", func() bool { return len(col.closed()) >= 1 })
	cs := col.closed()
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	if len(cs) != 1 {
		t.Fatalf("%d connections", len(cs))
	}
	return cs[0], reg
}

func checkTLSOpen(t *testing.T, c *connOut, alpn string) {
	t.Helper()
	if c.open == nil || c.open.TLS == nil {
		t.Fatalf("open event without tls: %+v", c.open)
	}
	in := c.open.TLS
	if in.Version != "TLS 1.3" || in.CipherSuite == "" || in.ServerName != "feed.example" || in.ALPN != alpn {
		t.Errorf("open tls %+v", in)
	}
}

// TestTLSWebSocketEngine: a wss:// push of 1 MB and 10 MB messages with
// permessage-deflate (context takeover), through the engine with the
// client's key log on TAPLINE_KEYS: every message byte-identical, also
// with the keys 2 s behind the frames.
func TestTLSWebSocketEngine(t *testing.T) {
	cp := captureWSS(t, []int{1 << 20, 10 << 20, 1000, 5}, websocket.CompressionContextTakeover)
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{{"keys-first", 0}, {"keys-delayed", 2 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			c, reg := runTLS(t, cp, tlsRun{keyDelay: tc.delay})
			checkTLSOpen(t, c, "http/1.1")
			if c.open.Path != "/feed" || c.open.Protocol != "websocket" {
				t.Errorf("open %+v", c.open)
			}
			data := binaryMsgs(c, proto.ServerToClient)
			if len(data) != len(cp.msgs) {
				t.Fatalf("%d binary messages, want %d", len(data), len(cp.msgs))
			}
			for i, m := range data {
				if !m.complete || (len(m.body) > 1000 && !m.compressed) || !bytes.Equal(m.body, cp.msgs[i]) {
					t.Errorf("message %d: complete %v compressed %v, %d bytes, identical %v", i, m.complete, m.compressed, len(m.body), bytes.Equal(m.body, cp.msgs[i]))
				}
			}
			ev := c.closeEv
			if ev.TLS == nil || ev.TLS.Undecryptable || ev.TLS.S2C.RecordsLost != 0 || ev.TLS.S2C.Records < int64(len(cp.s2c)/(16384+22)) || len(c.gaps) != 0 {
				t.Errorf("close %+v tls %+v gaps %v", ev, ev.TLS, c.gaps)
			}
			if n := metricValue(t, reg, "tapline_reassemble_tls_connections_total", nil); n != 1 {
				t.Errorf("tls connections %v", n)
			}
		})
	}
}

// TestTLSKeysNeverSent: without keys nothing of the connection is
// published as a message; it is reported undecryptable in its open and
// close events and the metric.
func TestTLSKeysNeverSent(t *testing.T) {
	cp := captureWSS(t, []int{1 << 20, 1000}, websocket.CompressionContextTakeover)
	c, reg := runTLS(t, cp, tlsRun{keyDelay: -1, holdTime: 2 * time.Second})
	if n := c.bytes[proto.ClientToServer] + c.bytes[proto.ServerToClient]; n != 0 {
		t.Fatalf("%d bytes published without keys", n)
	}
	checkTLSOpen(t, c, "") // the negotiated ALPN is in the encrypted handshake
	if !c.open.TLS.Undecryptable {
		t.Error("open event not undecryptable")
	}
	if c.closeEv.TLS == nil || !c.closeEv.TLS.Undecryptable || c.closeEv.TLS.S2C.RecordsUndecryptable == 0 {
		t.Errorf("close tls %+v", c.closeEv.TLS)
	}
	if n := metricValue(t, reg, "tapline_reassemble_tls_undecryptable_connections_total", nil); n != 1 {
		t.Errorf("undecryptable metric %v", n)
	}
}

// TestTLSDroppedSegment: one mirror segment lost inside a TLS record of
// a message (permessage-deflate without context takeover): that message
// is flagged, every other one is exact.
func TestTLSDroppedSegment(t *testing.T) {
	sizes := []int{1 << 20, 1 << 20, 300000, 300000, 1000}
	cp := captureWSS(t, sizes, websocket.CompressionNoContextTakeover)
	// Inside a message, not on a record boundary.
	off := len(cp.s2c)*3/10 + 333
	c, _ := runTLS(t, cp, tlsRun{dropS2C: []int{off}})
	data := binaryMsgs(c, proto.ServerToClient)
	if len(data) != len(sizes) {
		t.Fatalf("%d messages", len(data))
	}
	flagged := 0
	for i, m := range data {
		exact := m.complete && bytes.Equal(m.body, cp.msgs[i])
		if !exact {
			flagged++
			if m.complete {
				t.Errorf("message %d published complete but differs", i)
			}
		}
	}
	if flagged != 1 {
		t.Errorf("%d messages flagged, want 1", flagged)
	}
	ev := c.closeEv
	if ev.TLS == nil || ev.TLS.S2C.RecordsLost != 1 || ev.TLS.S2C.PlaintextLost == 0 {
		t.Errorf("close tls %+v", ev.TLS)
	}
	if len(c.gaps) != 1 {
		t.Errorf("gaps %v", c.gaps)
	}
}

var _ = jetstream.DeliverAllPolicy

// tlsFrames cuts two streams into TCP frames (handshake, segments of at
// most 1448 bytes in the order of writes, FINs); segments of the s2c
// stream at the offsets in drop are left out.
func tlsFrames(tb testing.TB, writes []tlsWrite, streams [2][]byte, drop []int) []framebatch.Frame {
	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(tb, "10.9.0.1:51000", "10.9.0.2:443", 5, &clock)
	var out []framebatch.Frame
	out = append(out, c.frame(true, "S", nil), c.frame(false, "SA", nil))
	isn := c.seq
	dropped := map[int]bool{}
	for _, o := range drop {
		dropped[o/1448*1448] = true
	}
	pos := [2]int{}
	for _, w := range writes {
		i, client := w.dir, w.dir == 0
		end := pos[i] + w.n
		for pos[i] < end {
			n := min(1448-pos[i]%1448, end-pos[i])
			if !(i == 1 && dropped[pos[i]/1448*1448]) {
				c.seq[i] = isn[i] + uint32(pos[i])
				out = append(out, c.frame(client, "PA", streams[i][pos[i]:pos[i]+n]))
			}
			pos[i] += n
		}
	}
	for i, client := range []bool{true, false} {
		c.seq[i] = isn[i] + uint32(len(streams[i]))
		out = append(out, c.frame(client, "FA", nil))
	}
	return out
}

// TestTLSInboundOnly: only the server-to-client packets of the wss://
// push were mirrored (the production host is the client; inbound-only
// session), no handshake: the ClientHello is missing, the secrets are
// found by trying the stored ones; every message is exact.
func TestTLSInboundOnly(t *testing.T) {
	cp := captureWSS(t, []int{1 << 20, 3000, 500000}, websocket.CompressionContextTakeover)
	c, _ := runTLS(t, cp, tlsRun{s2cOnly: true})
	if c.open == nil || c.open.TLS == nil || c.open.TLS.Version != "TLS 1.3" || c.open.TLS.Undecryptable || !c.open.TLS.ClientHelloMissing {
		t.Fatalf("open %+v", c.open)
	}
	requireBinaryExact(t, c, cp.msgs)
	if n := c.bytes[proto.ClientToServer]; n != 0 || c.closeEv.C2S.BytesSeen != 0 || c.closeEv.S2C.BytesSeen != int64(len(cp.s2c)) {
		t.Errorf("%d client bytes published, close %+v", n, c.closeEv)
	}
}

// TestTLSIdleContinuation: a decrypted TLS connection closed idle in the
// middle of a message, then more of its packets: the continuation
// (resumes) cannot be decrypted (the record state is gone) and publishes
// nothing, reported undecryptable; the first connection's messages
// before the pause are exact.
func TestTLSIdleContinuation(t *testing.T) {
	cp := captureWSS(t, []int{3000, 200000, 1 << 20}, websocket.CompressionContextTakeover)
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	cfg := testConfig(url, 2, "tls-idle")
	cfg.NewDecoder = nil
	cfg.IdleTimeout = 2 * time.Second
	cfg.TLS, cfg.TLSHoldBytes, cfg.TLSHoldTime, cfg.TLSMaxKeys, cfg.TLSKeyMaxAge = true, 64<<20, 30*time.Second, 1000, time.Hour
	ctx := context.Background()
	if err := proto.EnsureStreams(ctx, js, testStreams, proto.KeysStream); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, proto.KeysSubject("prod"), cp.keylog); err != nil {
		t.Fatal(err)
	}
	startEngine(t, cfg)
	frames := tlsFrames(t, cp.writes, [2][]byte{cp.c2s, cp.s2c}, nil)
	half := len(frames) * 2 / 3
	b := newBatcher(t, js, 16)
	for i := range frames[:half] {
		b.add(&frames[i], shardOf(t, &frames[i], 2))
	}
	b.flush()
	waitFor(t, "idle close", func() bool { return len(col.closed()) >= 1 })
	for i := range frames[half:] {
		f := frames[half+i]
		f.TimeNs += int64(10 * time.Second) // after the pause
		b.add(&f, shardOf(t, &f, 2))
	}
	b.flush()
	waitFor(t, "second close", func() bool { return len(col.closed()) >= 2 })
	cs := col.closed()
	col.mu.Lock()
	defer col.mu.Unlock()
	var first, cont *connOut
	for _, c := range cs {
		if c.open != nil && c.open.Resumes != "" {
			cont = c
		} else {
			first = c
		}
	}
	if first == nil || cont == nil {
		t.Fatalf("connections %v", cs)
	}
	if first.closeEv.Reason != "idle" || first.open.TLS == nil {
		t.Fatalf("first: %+v %+v", first.open, first.closeEv)
	}
	var n int
	for _, m := range first.msgs[proto.ServerToClient] {
		if m.opcode == proto.OpBinary && m.complete {
			if !bytes.Equal(m.body, cp.msgs[n]) {
				t.Errorf("message %d differs", n)
			}
			n++
		}
	}
	if n == 0 {
		t.Error("no message before the pause")
	}
	if cont.open.TLS == nil || !cont.open.TLS.Undecryptable || cont.closeEv.TLS == nil || !cont.closeEv.TLS.Undecryptable {
		t.Errorf("continuation open %+v close %+v", cont.open.TLS, cont.closeEv.TLS)
	}
	if cont.bytes[proto.ServerToClient]+cont.bytes[proto.ClientToServer] != 0 {
		t.Errorf("continuation published %d bytes", cont.bytes[proto.ServerToClient])
	}
}

// TestTLSLingeringBounded: closes waiting for keys are no longer charged
// by the TCP tracker; together they hold at most a quarter of a shard's
// --max-memory share. A connection holding 1.3 MB of ciphertext at its FIN
// with a 2 MiB share is finished at once (undecryptable), not after the
// 10-minute hold time.
func TestTLSLingeringBounded(t *testing.T) {
	cp := captureWSS(t, []int{1300000}, websocket.CompressionDisabled)
	c, _ := runTLS(t, cp, tlsRun{keyDelay: -1, holdTime: 10 * time.Minute, maxMemory: 4 << 20})
	if c.closeEv.TLS == nil || !c.closeEv.TLS.Undecryptable || c.bytes[proto.ServerToClient] != 0 {
		t.Fatalf("close %+v tls %+v, %d bytes", c.closeEv, c.closeEv.TLS, c.bytes[proto.ServerToClient])
	}
	if c.closeEv.Reason != "fin" {
		t.Errorf("reason %s", c.closeEv.Reason)
	}
}

// TestTLSHandOverWaitingForKeys: the owner stops (hand-over) while a
// TLS connection that has ended waits for its keys; its successor
// rebuilds it from the redelivered batches once the keys have come:
// every message exact, the close not undecryptable (the old owner used
// to publish that close, undecryptable, under the same id).
func TestTLSHandOverWaitingForKeys(t *testing.T) {
	cp := captureWSS(t, []int{300000, 1000}, websocket.CompressionContextTakeover)
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	mk := func(id string) Config {
		cfg := testConfig(url, 2, id)
		cfg.NewDecoder = nil
		cfg.IdleTimeout = time.Hour
		cfg.TLS, cfg.TLSHoldBytes, cfg.TLSHoldTime, cfg.TLSMaxKeys, cfg.TLSKeyMaxAge = true, 64<<20, 5*time.Minute, 1000, time.Hour
		return cfg
	}
	ctx := context.Background()
	if err := proto.EnsureStreams(ctx, js, testStreams, proto.KeysStream); err != nil {
		t.Fatal(err)
	}
	stopA, regA := startEngineReg(t, mk("a"))
	b := newBatcher(t, js, 16)
	for _, f := range tlsFrames(t, cp.writes, [2][]byte{cp.c2s, cp.s2c}, nil) {
		b.add(&f, shardOf(t, &f, 2))
	}
	b.flush()
	waitFor(t, "the connection on a", func() bool {
		return metricValue(t, regA, "tapline_reassemble_tls_connections_total", nil) == 1 &&
			metricValue(t, regA, "tapline_reassemble_frames_total", nil) > float64(len(cp.s2c)/1448)
	})
	time.Sleep(500 * time.Millisecond) // its FIN processed: the close waits for keys
	stopA()
	if _, err := js.Publish(ctx, proto.KeysSubject("prod"), cp.keylog); err != nil {
		t.Fatal(err)
	}
	startEngine(t, mk("b"))
	waitFor(t, "close", func() bool { return len(col.closed()) >= 1 })
	time.Sleep(time.Second)
	cs := col.closed()
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(cs) != 1 {
		t.Fatalf("%d connections", len(cs))
	}
	c := cs[0]
	if c.closeEv.TLS == nil || c.closeEv.TLS.Undecryptable {
		t.Fatalf("close tls %+v", c.closeEv.TLS)
	}
	n := 0
	for _, m := range c.msgs[proto.ServerToClient] {
		if m.opcode == proto.OpBinary {
			if !m.complete || !bytes.Equal(m.body, cp.msgs[n]) {
				t.Errorf("message %d not exact", n)
			}
			n++
		}
	}
	if n != len(cp.msgs) {
		t.Errorf("%d messages", n)
	}
}

// binaryMsgs is the binary messages of c in direction dir (the test
// payloads, without control frames).
func binaryMsgs(c *connOut, dir proto.Direction) []*gotMsg {
	var data []*gotMsg
	for _, m := range c.msgs[dir] {
		if m.opcode == proto.OpBinary {
			data = append(data, m)
		}
	}
	return data
}

// requireBinaryExact checks that c's server-to-client binary messages are
// want, each complete and byte-identical.
func requireBinaryExact(t *testing.T, c *connOut, want [][]byte) {
	t.Helper()
	data := binaryMsgs(c, proto.ServerToClient)
	if len(data) != len(want) {
		t.Fatalf("%d messages", len(data))
	}
	for i, m := range data {
		if !m.complete || !bytes.Equal(m.body, want[i]) {
			t.Errorf("message %d not exact", i)
		}
	}
}

// TestTLSLateKeysManyGaps: an inbound-only wss:// push through a
// congested mirror (a segment lost every 20 KB of one message) whose keys
// come 2 s after the frames. More than maxEarlyGaps gap events come
// before the decoder can read the upgrade answer: the open event still
// says websocket (it said tcp, and replay in --listen mode left the
// connection's messages undelivered without a result each), the message
// with the holes is flagged, the others are exact.
func TestTLSLateKeysManyGaps(t *testing.T) {
	sizes := []int{1 << 20, 1 << 20, 1 << 20, 3000}
	cp := captureWSS(t, sizes, websocket.CompressionNoContextTakeover)
	var drop []int
	for off := len(cp.s2c) * 3 / 8; len(drop) < 2*maxEarlyGaps; off += 20000 {
		drop = append(drop, off)
	}
	c, _ := runTLS(t, cp, tlsRun{s2cOnly: true, keyDelay: 2 * time.Second, dropS2C: drop})
	if c.open == nil || c.open.Protocol != "websocket" {
		t.Fatalf("open %+v: want a websocket", c.open)
	}
	if len(c.gaps) < len(drop) {
		t.Errorf("%d gap events, want %d", len(c.gaps), len(drop))
	}
	data := binaryMsgs(c, proto.ServerToClient)
	if len(data) != len(sizes) {
		t.Fatalf("%d binary messages, want %d", len(data), len(sizes))
	}
	for i, m := range data {
		exact := m.complete && bytes.Equal(m.body, cp.msgs[i])
		switch {
		case i == 1 && m.complete:
			t.Errorf("message 1 (the holes) published complete")
		case i != 1 && !exact:
			t.Errorf("message %d not exact", i)
		}
	}
}

// TestTLSCongestedEnd: a wss:// push through a mirror that loses half of
// the server's segments, handshake included, up to the FIN (as a token
// bucket does). With the keys present the connection closes at its FIN
// (one whose ServerHello was lost, once its hold time has passed,
// undecryptable): every message published complete is exact, the last
// one flagged.
// It lingered as if waiting for keys (the decoder, searching for a record
// boundary after a lost header, held bytes that wait for nothing) until a
// hand-over: no close event, the message without a last chunk.
func TestTLSCongestedEnd(t *testing.T) {
	sizes := []int{300000, 1000, 1 << 20}
	cp := captureWSS(t, sizes, websocket.CompressionNoContextTakeover)
	for _, seed := range []uint64{1, 2, 3, 4, 5, 6, 7, 8} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			var drop []int
			for off := 0; off < len(cp.s2c); off += 1448 {
				if rng.IntN(2) == 0 {
					drop = append(drop, off)
				}
			}
			// A short hold: a connection whose handshake was lost waits
			// that long for keys it cannot use, then closes undecryptable.
			c, _ := runTLS(t, cp, tlsRun{dropS2C: drop, holdTime: 2 * time.Second})
			for i, m := range binaryMsgs(c, proto.ServerToClient) {
				if m.complete && (m.seq > uint64(len(cp.msgs)) || !bytes.Equal(m.body, cp.msgs[m.seq-1])) {
					t.Errorf("message %d (seq %d) published complete but not exact", i, m.seq)
				}
				if m.seq == uint64(len(sizes)) && m.complete {
					t.Errorf("the last message (its end lost) published complete")
				}
			}
			if c.closeEv.TLS == nil {
				t.Errorf("close event without tls")
			}
		})
	}
}
