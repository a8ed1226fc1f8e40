package message_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

const upgradeReq = "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nCookie: a=b\r\n\r\n"

const upgradeResp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n"

// deflate compresses msg as permessage-deflate does (sync flush, tail
// removed), with a fresh compressor.
func deflate(msg []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, 5)
	w.Write(msg)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

func TestHandshakeBothDirections(t *testing.T) {
	ev := []event{
		{dir: proto.ClientToServer, b: []byte(upgradeReq)},
		{dir: proto.ServerToClient, b: append([]byte(upgradeResp), frame(false, wsframe.OpText, true, true, deflate([]byte("hello compressed")))...)},
		{dir: proto.ClientToServer, b: frame(true, wsframe.OpText, true, true, deflate([]byte("from the client")))},
	}
	col, _ := run(t, ev, message.Meta{ClientKnown: true})
	o := col.opens[0]
	if o.Protocol != "websocket" || o.Path != "/chat?room=1" || o.Host != "example.com" || o.Subprotocol != "chat" ||
		!strings.Contains(o.Extensions, "server_no_context_takeover") || o.Headers["Cookie"] != "a=b" || o.MidStream {
		t.Fatalf("open %+v", o)
	}
	if _, ok := o.Headers["Sec-WebSocket-Key"]; ok {
		t.Errorf("handshake key in headers")
	}
	s := col.dir(proto.ServerToClient)
	c := col.dir(proto.ClientToServer)
	if len(s) != 1 || string(s[0].Body) != "hello compressed" || !s[0].Compressed || !s[0].Complete {
		t.Fatalf("s2c %+v", s)
	}
	if len(c) != 1 || string(c[0].Body) != "from the client" {
		t.Fatalf("c2s %+v", c)
	}
}

// TestOnlyResponseMirrored: outbound-only mirroring sees the 101 and the
// server's frames; the wrongly guessed direction is corrected.
func TestOnlyResponseMirrored(t *testing.T) {
	ev := []event{
		{dir: proto.ClientToServer, b: []byte(upgradeResp[:40])}, // guess is wrong: this is the server
		{dir: proto.ClientToServer, b: append([]byte(upgradeResp[40:]), frame(false, wsframe.OpBinary, true, false, []byte{1, 2, 3})...)},
	}
	col, _ := run(t, ev, message.Meta{Client: "10.0.0.2:443", Server: "10.0.0.1:40000"})
	if col.swaps != 1 {
		t.Fatalf("swaps %d", col.swaps)
	}
	o := col.opens[0]
	if o.Protocol != "websocket" || o.Server != "10.0.0.2:443" || o.Subprotocol != "chat" || o.Extensions == "" {
		t.Fatalf("open %+v", o)
	}
	s := col.dir(proto.ServerToClient)
	if len(s) != 1 || !bytes.Equal(s[0].Body, []byte{1, 2, 3}) {
		t.Fatalf("s2c %+v", col.msgs)
	}
}

// TestOnlyRequestMirrored: inbound-only mirroring sees the request and the
// client's masked frames, compressed ones included (negotiation unknown).
func TestOnlyRequestMirrored(t *testing.T) {
	ev := []event{
		{dir: proto.ClientToServer, b: append([]byte(upgradeReq), frame(true, wsframe.OpText, true, false, []byte("plain"))...)},
		{dir: proto.ClientToServer, b: frame(true, wsframe.OpText, true, true, deflate([]byte("squeezed squeezed squeezed")))},
	}
	col, dec := run(t, ev, message.Meta{ClientKnown: true})
	o := col.opens[0]
	if o.Protocol != "websocket" || o.Path != "/chat?room=1" || o.Extensions != "" {
		t.Fatalf("open %+v", o)
	}
	c := col.dir(proto.ClientToServer)
	if len(c) != 2 || string(c[0].Body) != "plain" || string(c[1].Body) != "squeezed squeezed squeezed" || !c[1].Complete {
		t.Fatalf("c2s %+v", c)
	}
	if st := dec.Stats(proto.ClientToServer); st.BadFrames != 0 || st.MessagesComplete != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestRawTCP(t *testing.T) {
	ev := []event{
		{dir: proto.ClientToServer, b: []byte("SSH-2.0-OpenSSH_9.0\r\n")},
		{dir: proto.ClientToServer, b: []byte("more client bytes")},
		{dir: proto.ServerToClient, b: []byte("SSH-2.0-server\r\n")},
		{dir: proto.ClientToServer, b: []byte("abc")},
		{dir: proto.ClientToServer, gap: 10},
		{dir: proto.ClientToServer, b: []byte("def")},
	}
	col, dec := run(t, ev, message.Meta{ClientKnown: true})
	if o := col.opens[0]; o.Protocol != "tcp" {
		t.Fatalf("open %+v", o)
	}
	c := col.dir(proto.ClientToServer)
	s := col.dir(proto.ServerToClient)
	if len(c) != 3 || string(c[0].Body) != "SSH-2.0-OpenSSH_9.0\r\nmore client bytes" || !c[0].Complete ||
		string(c[1].Body) != "abc" || c[1].Complete || c[1].Missing != 10 || string(c[2].Body) != "def" || !c[2].Complete {
		for _, m := range c {
			t.Logf("%q complete=%v missing=%d", m.Body, m.Complete, m.Missing)
		}
		t.Fatal("c2s runs wrong")
	}
	if len(s) != 1 || s[0].Opcode != proto.OpTCP || string(s[0].Body) != "SSH-2.0-server\r\n" {
		t.Fatalf("s2c %+v", s)
	}
	if st := dec.Stats(proto.ClientToServer); st.MessagesIncomplete != 1 || st.MessagesComplete != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestPlainHTTP: an HTTP exchange without upgrade is raw TCP, request
// bytes included, with the request's path in the open event.
func TestPlainHTTP(t *testing.T) {
	req := "GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n"
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	ev := []event{
		{dir: proto.ClientToServer, b: []byte(req[:10])},
		{dir: proto.ClientToServer, b: []byte(req[10:])},
		{dir: proto.ServerToClient, b: []byte(resp)},
	}
	col, _ := run(t, ev, message.Meta{ClientKnown: true})
	if o := col.opens[0]; o.Protocol != "tcp" || o.Path != "/index.html" {
		t.Fatalf("open %+v", o)
	}
	if c := col.dir(proto.ClientToServer); len(c) != 1 || string(c[0].Body) != req {
		t.Fatalf("c2s %+v", c)
	}
	if s := col.dir(proto.ServerToClient); len(s) != 1 || string(s[0].Body) != resp {
		t.Fatalf("s2c %+v", s)
	}
}

// TestUpgradeRefused: a 400 answer to an upgrade request leaves raw TCP.
func TestUpgradeRefused(t *testing.T) {
	resp := "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
	ev := []event{
		{dir: proto.ClientToServer, b: []byte(upgradeReq)},
		{dir: proto.ServerToClient, b: []byte(resp)},
	}
	col, _ := run(t, ev, message.Meta{ClientKnown: true})
	if o := col.opens[0]; o.Protocol != "tcp" {
		t.Fatalf("open %+v", o)
	}
	if c := col.dir(proto.ClientToServer); len(c) != 1 || string(c[0].Body) != upgradeReq {
		t.Fatalf("c2s %+v", c)
	}
}

// TestBadFrames: protocol violations are counted, bounded, and the
// stream goes on.
func TestBadFrames(t *testing.T) {
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	var s2c []byte
	s2c = append(s2c, resp...)
	s2c = append(s2c, frame(false, wsframe.OpText, true, false, []byte("ok1"))...)
	s2c = append(s2c, frame(false, 0x3, true, false, []byte("reserved opcode"))...)                 // unknown data opcode
	s2c = append(s2c, frame(false, 0xB, true, false, []byte("reserved control"))...)                // unknown control opcode
	s2c = append(s2c, frame(false, wsframe.OpText, true, true, []byte("rsv1 without pmd"))...)      // RSV1 not negotiated
	s2c = append(s2c, frame(false, wsframe.OpPing, true, false, bytes.Repeat([]byte("P"), 300))...) // oversized ping: delivered flagged
	s2c = append(s2c, frame(false, wsframe.OpPing, false, false, []byte("frag ping"))...)           // fragmented control: skipped
	s2c = append(s2c, frame(false, wsframe.OpContinuation, true, false, []byte("orphan"))...)       // continuation without a message
	s2c = append(s2c, frame(false, wsframe.OpText, true, false, []byte("ok2"))...)
	big := wsframe.Append(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpPong, Length: 1 << 30}) // a 1 GiB pong: skipped, never held
	s2c = append(s2c, big...)
	ev := []event{{dir: proto.ServerToClient, b: s2c}}
	chunk := make([]byte, 1<<20)
	for i := 0; i < 1<<10; i++ {
		ev = append(ev, event{dir: proto.ServerToClient, b: chunk})
	}
	ev = append(ev, event{dir: proto.ServerToClient, b: frame(false, wsframe.OpText, true, false, []byte("ok3"))})
	// And a 2^63 length: nothing after it is trusted until a boundary verifies.
	ev = append(ev, event{dir: proto.ServerToClient, b: []byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1}})
	for i := 0; i < 4; i++ {
		ev = append(ev, event{dir: proto.ServerToClient, b: frame(false, wsframe.OpText, true, false, []byte("after the bad length"))})
	}
	hw := newHeapWatch()
	col, dec := run(t, ev, message.Meta{ClientKnown: true})
	hw.sample()
	var texts []string
	for _, m := range col.dir(proto.ServerToClient) {
		if m.Opcode == proto.OpText && m.Complete {
			texts = append(texts, string(m.Body))
		}
	}
	if strings.Join(texts, "|") != "ok1|ok2|ok3|after the bad length|after the bad length|after the bad length|after the bad length" {
		t.Errorf("texts %q", texts)
	}
	st := dec.Stats(proto.ServerToClient)
	if st.BadFrames != 8 {
		t.Errorf("bad frames %d, want 8 (stats %+v)", st.BadFrames, st)
	}
	var ping *msg
	for _, m := range col.msgs {
		if m.Opcode == proto.OpPing {
			ping = m
		}
	}
	if ping == nil || ping.Complete || len(ping.Body) != 300 {
		t.Errorf("oversized ping %+v", ping)
	}
	if g := hw.growth(); g > 16<<20 {
		t.Errorf("heap grew %d MiB", g>>20)
	}
}

// TestResponseOnlyThenFrames: the 101 was seen but the request was not
// (its packet was not mirrored): the client's frames are found by hunting.
func TestResponseOnlyThenFrames(t *testing.T) {
	var c2s []byte
	for i := 0; i < 4; i++ {
		c2s = append(c2s, frame(true, wsframe.OpText, true, false, []byte("client says hello"))...)
	}
	ev := []event{
		{dir: proto.ServerToClient, b: []byte(upgradeResp)},
		{dir: proto.ClientToServer, b: c2s},
	}
	col, _ := run(t, ev, message.Meta{ClientKnown: true})
	if o := col.opens[0]; o.Protocol != "websocket" {
		t.Fatalf("open %+v", o)
	}
	if c := col.dir(proto.ClientToServer); len(c) != 4 || string(c[0].Body) != "client says hello" || !c[0].Complete {
		t.Fatalf("c2s %+v", c)
	}
}

// TestManyResyncsInOneSegment: thousands of bad lengths, each followed by
// frames that verify, in one Data call (no recursion, every good frame out).
func TestManyResyncsInOneSegment(t *testing.T) {
	var s2c []byte
	s2c = append(s2c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"...)
	const rounds = 20000
	for i := 0; i < rounds; i++ {
		s2c = append(s2c, 0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0)
		for j := 0; j < 3; j++ {
			s2c = append(s2c, frame(false, wsframe.OpText, true, false, []byte("valid text"))...)
		}
	}
	col, dec := run(t, []event{{dir: proto.ServerToClient, b: s2c}}, message.Meta{ClientKnown: true})
	st := dec.Stats(proto.ServerToClient)
	if st.BadFrames != rounds || st.Resyncs != rounds {
		t.Errorf("stats %+v", st)
	}
	good := 0
	for _, m := range col.dir(proto.ServerToClient) {
		if m.Complete && string(m.Body) == "valid text" {
			good++
		} else if m.Complete {
			t.Fatalf("garbage %q", m.Body)
		}
	}
	if good != 3*rounds {
		t.Errorf("%d good messages, want %d", good, 3*rounds)
	}
}

// TestMidStreamRawTCP: a mid-stream connection carrying text is raw TCP,
// everything held published.
func TestMidStreamRawTCP(t *testing.T) {
	body := bytes.Repeat([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world\n"), 20)
	ev := []event{{dir: proto.ServerToClient, b: body[7:]}, {dir: proto.ClientToServer, b: []byte("GET / HTTP/1.1\r\n\r\n")}}
	col, _ := run(t, ev, message.Meta{MidStream: true})
	if o := col.opens[0]; o.Protocol != "tcp" || !o.MidStream {
		t.Fatalf("open %+v", o)
	}
	var s2c []byte
	for _, m := range col.dir(proto.ServerToClient) {
		s2c = append(s2c, m.Body...)
	}
	if !bytes.Equal(s2c, body[7:]) {
		t.Fatalf("s2c %d bytes, want %d", len(s2c), len(body)-7)
	}
}
