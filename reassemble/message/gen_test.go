package message_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
)

// event is what the server side of a generated connection read (c2s) or
// wrote (s2c), in order.
type event struct {
	dir proto.Direction
	b   []byte
	gap int64 // a Gap instead of Data
}

type recorder struct {
	mu sync.Mutex
	ev []event
}

func (r *recorder) add(dir proto.Direction, b []byte) {
	r.mu.Lock()
	r.ev = append(r.ev, event{dir: dir, b: bytes.Clone(b)})
	r.mu.Unlock()
}

type recConn struct {
	net.Conn
	r *recorder
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.r.add(proto.ClientToServer, p[:n])
	}
	return n, err
}

func (c *recConn) Write(p []byte) (int, error) {
	c.r.add(proto.ServerToClient, p)
	return c.Conn.Write(p)
}

type recListener struct {
	net.Listener
	r *recorder
}

func (l *recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recConn{Conn: c, r: l.r}, nil
}

// sent is a message as its sender wrote it.
type sent struct {
	op  string
	sum [32]byte
	n   int
}

// traffic is one generated connection: what each side sent and the bytes
// the server saw.
type traffic struct {
	ev   []event
	sent map[proto.Direction][]sent
}

// payloads returns the messages of a session: sizes that use every length
// encoding, text that compresses, and binary that does not.
func payloads(seed int64) [][]byte {
	rng := rand.New(rand.NewSource(seed))
	var out [][]byte
	for i, n := range []int{5, 126, 200, 1000, 5000, 65535, 65536, 70000, 300000, 40, 3000, 1 << 20} {
		b := make([]byte, n)
		if i%3 == 2 {
			rng.Read(b)
		} else {
			var s bytes.Buffer
			for s.Len() < n {
				fmt.Fprintf(&s, `{"id":%d,"user":"u%03d","event":"tick","price":%d.%02d},`, s.Len(), rng.Intn(50), rng.Intn(1000), rng.Intn(100))
			}
			copy(b, s.Bytes())
		}
		out = append(out, b)
	}
	return out
}

func opOf(i int) string {
	if i%3 == 2 {
		return proto.OpBinary
	}
	return proto.OpText
}

func reply(b []byte) []byte {
	r := make([]byte, len(b)+7)
	copy(r, "reply: ")
	copy(r[7:], b)
	return r
}

func serve(t *testing.T, h http.Handler) (addr string, rec *recorder, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec = &recorder{}
	srv := &http.Server{Handler: h}
	go srv.Serve(&recListener{Listener: ln, r: rec})
	return ln.Addr().String(), rec, func() { srv.Close() }
}

// coderSession runs a coder/websocket client and server with the given
// compression mode; the client sends every payload, the server replies.
func coderSession(t *testing.T, mode coder.CompressionMode, msgs ...[]byte) traffic {
	if len(msgs) == 0 {
		msgs = payloads(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	tr := traffic{sent: map[proto.Direction][]sent{}}
	done := make(chan struct{})
	addr, rec, stop := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		c, err := coder.Accept(w, r, &coder.AcceptOptions{CompressionMode: mode, Subprotocols: []string{"chat.v1"}})
		if err != nil {
			t.Error(err)
			return
		}
		c.SetReadLimit(64 << 20)
		for {
			typ, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			rp := reply(data)
			mu.Lock()
			tr.sent[proto.ServerToClient] = append(tr.sent[proto.ServerToClient], sent{coderOp(typ), sha256.Sum256(rp), len(rp)})
			mu.Unlock()
			if err := c.Write(ctx, typ, rp); err != nil {
				return
			}
		}
	}))
	defer stop()
	c, _, err := coder.Dial(ctx, "ws://"+addr+"/feed?x=1", &coder.DialOptions{CompressionMode: mode, Subprotocols: []string{"chat.v1"},
		HTTPHeader: http.Header{"X-Tenant": []string{"acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(64 << 20)
	for i, p := range msgs {
		typ := coder.MessageText
		if opOf(i) == proto.OpBinary {
			typ = coder.MessageBinary
		}
		mu.Lock()
		tr.sent[proto.ClientToServer] = append(tr.sent[proto.ClientToServer], sent{opOf(i), sha256.Sum256(p), len(p)})
		mu.Unlock()
		if err := c.Write(ctx, typ, p); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c.Close(coder.StatusNormalClosure, "bye")
	<-done
	rec.mu.Lock()
	tr.ev = rec.ev
	rec.mu.Unlock()
	return tr
}

func coderOp(t coder.MessageType) string {
	if t == coder.MessageBinary {
		return proto.OpBinary
	}
	return proto.OpText
}

// gorillaSession runs gorilla/websocket without compression and with
// small write buffers, so messages span many frames; the client sends a
// ping between the fragments of every message.
func gorillaSession(t *testing.T) traffic {
	var mu sync.Mutex
	tr := traffic{sent: map[proto.Direction][]sent{}}
	done := make(chan struct{})
	up := gorilla.Upgrader{ReadBufferSize: 512, WriteBufferSize: 512}
	addr, rec, stop := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for {
			typ, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			rp := reply(data)
			mu.Lock()
			tr.sent[proto.ServerToClient] = append(tr.sent[proto.ServerToClient], sent{gorillaOp(typ), sha256.Sum256(rp), len(rp)})
			mu.Unlock()
			wr, err := c.NextWriter(typ)
			if err != nil {
				return
			}
			for len(rp) > 0 { // small writes: the server emits frames of its buffer size
				n := min(len(rp), 700)
				wr.Write(rp[:n])
				rp = rp[n:]
			}
			wr.Close()
		}
	}))
	defer stop()
	d := gorilla.Dialer{ReadBufferSize: 512, WriteBufferSize: 512}
	c, _, err := d.Dial("ws://"+addr+"/g", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range payloads(2) {
		typ := gorilla.TextMessage
		if opOf(i) == proto.OpBinary {
			typ = gorilla.BinaryMessage
		}
		mu.Lock()
		tr.sent[proto.ClientToServer] = append(tr.sent[proto.ClientToServer], sent{opOf(i), sha256.Sum256(p), len(p)})
		mu.Unlock()
		w, err := c.NextWriter(typ)
		if err != nil {
			t.Fatal(err)
		}
		half := len(p) / 2
		w.Write(p[:half])
		c.WriteControl(gorilla.PingMessage, []byte(fmt.Sprint("p", i)), time.Now().Add(time.Minute))
		w.Write(p[half:])
		w.Close()
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Minute))
	c.ReadMessage()
	c.Close()
	<-done
	rec.mu.Lock()
	tr.ev = rec.ev
	rec.mu.Unlock()
	return tr
}

func gorillaOp(t int) string {
	if t == gorilla.BinaryMessage {
		return proto.OpBinary
	}
	return proto.OpText
}

// run feeds events to a fresh Decoder.
func run(t testing.TB, ev []event, meta message.Meta) (*collector, message.Decoder) {
	return runLimits(t, ev, meta, message.Limits{})
}

// runLimits is run with the decoder's limits.
func runLimits(t testing.TB, ev []event, meta message.Meta, limits message.Limits) (*collector, message.Decoder) {
	col := newCollector(t)
	if meta.Conn == "" {
		meta.Conn = "gen"
	}
	if meta.Client == "" {
		meta.Client, meta.Server = "127.0.0.1:50000", "127.0.0.1:80"
	}
	dec := message.New(meta, col, limits)
	swapped := false
	var ts int64 = 1
	for _, e := range ev {
		dir := e.dir
		if swapped {
			dir = flip(dir)
		}
		before := col.swaps
		if e.gap > 0 {
			dec.Gap(dir, e.gap, ts)
		} else {
			dec.Data(dir, e.b, ts)
		}
		if col.swaps != before {
			swapped = !swapped
		}
		ts++
	}
	dec.Close(ts)
	return col, dec
}

func flip(d proto.Direction) proto.Direction {
	if d == proto.ClientToServer {
		return proto.ServerToClient
	}
	return proto.ClientToServer
}

func dataMsgs(ms []*msg) []*msg {
	var out []*msg
	for _, m := range ms {
		if m.Opcode == proto.OpText || m.Opcode == proto.OpBinary {
			out = append(out, m)
		}
	}
	return out
}

// publishedCounts counts published messages as a direction's Stats do:
// data messages complete and incomplete, control frames apart.
func publishedCounts(ms []*msg) message.Stats {
	var st message.Stats
	for _, m := range ms {
		switch {
		case m.Opcode == proto.OpPing || m.Opcode == proto.OpPong || m.Opcode == proto.OpClose:
			st.ControlFrames++
			if !m.Complete {
				st.ControlIncomplete++
			}
		case m.Complete:
			st.MessagesComplete++
		default:
			st.MessagesIncomplete++
		}
	}
	return st
}

// countsMatch reports whether st counts what publishedCounts counts.
func countsMatch(st, pub message.Stats) bool {
	return st.MessagesComplete == pub.MessagesComplete && st.MessagesIncomplete == pub.MessagesIncomplete &&
		st.ControlFrames == pub.ControlFrames && st.ControlIncomplete == pub.ControlIncomplete
}

// checkExact asserts that every data message was decoded complete and
// byte-exact.
func checkExact(t *testing.T, col *collector, tr traffic) {
	t.Helper()
	for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
		got := dataMsgs(col.dir(dir))
		want := tr.sent[dir]
		if len(got) != len(want) {
			t.Fatalf("%s: %d data messages, want %d", dir, len(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			if !g.Complete || g.Opcode != w.op || g.Sum != w.sum || int(g.Size) != w.n {
				t.Errorf("%s #%d: %s complete=%v size %d, want %s size %d (sum match %v)", dir, i, g.Opcode, g.Complete, g.Size, w.op, w.n, g.Sum == w.sum)
			}
		}
	}
}

// checkNoGarbage asserts that every message delivered complete is one the
// sender sent, in order, and returns the indexes of the sent messages that
// were not delivered complete.
func checkNoGarbage(t *testing.T, got []*msg, want []sent) (lost []int) {
	t.Helper()
	j := 0
	for _, g := range got {
		if !g.Complete {
			continue
		}
		k := j
		for k < len(want) && want[k].sum != g.Sum {
			k++
		}
		if k == len(want) {
			t.Fatalf("message seq %d (%s, %d bytes) delivered complete but was never sent", g.Seq, g.Opcode, g.Size)
		}
		for ; j < k; j++ {
			lost = append(lost, j)
		}
		j = k + 1
	}
	for ; j < len(want); j++ {
		lost = append(lost, j)
	}
	return lost
}

func TestGeneratedCoderContextTakeover(t *testing.T) {
	tr := coderSession(t, coder.CompressionContextTakeover)
	col, dec := run(t, tr.ev, message.Meta{ClientKnown: true})
	checkExact(t, col, tr)
	ev := col.opens[0]
	if ev.Protocol != "websocket" || ev.Path != "/feed?x=1" || ev.Subprotocol != "chat.v1" || ev.Headers["X-Tenant"] != "acme" || ev.Extensions == "" {
		t.Errorf("open event %+v", ev)
	}
	compressed := 0
	for _, m := range col.msgs {
		if m.Compressed {
			compressed++
		}
	}
	if compressed < 10 {
		t.Errorf("only %d compressed messages", compressed)
	}
	for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
		if st := dec.Stats(dir); st.BadFrames != 0 || st.Undecodable != 0 || st.MessagesIncomplete != 0 {
			t.Errorf("%s stats %+v", dir, st)
		}
	}
}

func TestGeneratedCoderNoContextTakeover(t *testing.T) {
	tr := coderSession(t, coder.CompressionNoContextTakeover)
	col, _ := run(t, tr.ev, message.Meta{ClientKnown: true})
	checkExact(t, col, tr)
	if ext := col.opens[0].Extensions; ext == "" {
		t.Errorf("no extensions in %+v", col.opens[0])
	}
}

func TestGeneratedGorillaFragmented(t *testing.T) {
	tr := gorillaSession(t)
	col, _ := run(t, tr.ev, message.Meta{ClientKnown: true})
	checkExact(t, col, tr)
	pings := 0
	for _, m := range col.dir(proto.ClientToServer) {
		if m.Opcode == proto.OpPing {
			if want := fmt.Sprint("p", pings); string(m.Body) != want {
				t.Errorf("ping %q, want %q", m.Body, want)
			}
			pings++
		}
	}
	if pings != len(tr.sent[proto.ClientToServer]) {
		t.Errorf("%d pings", pings)
	}
	var closeMsg *msg
	for _, m := range col.dir(proto.ClientToServer) {
		if m.Opcode == proto.OpClose {
			closeMsg = m
		}
	}
	if closeMsg == nil || closeMsg.CloseCode != 1000 || string(closeMsg.Body[2:]) != "bye" {
		t.Errorf("close message %+v", closeMsg)
	}
}

// TestGeneratedWrongGuess: without the SYN the TCP layer guesses the
// client from the ports; the decoder corrects it from the handshake.
func TestGeneratedWrongGuess(t *testing.T) {
	tr := gorillaSession(t)
	ev := make([]event, len(tr.ev))
	for i, e := range tr.ev {
		ev[i] = event{dir: flip(e.dir), b: e.b}
	}
	col, _ := run(t, ev, message.Meta{Client: "127.0.0.1:80", Server: "127.0.0.1:50000"})
	if col.swaps != 1 {
		t.Fatalf("%d swaps", col.swaps)
	}
	checkExact(t, col, tr)
	if o := col.opens[0]; o.Client != "127.0.0.1:50000" {
		t.Errorf("open event client %s", o.Client)
	}
}
