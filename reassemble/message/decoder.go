package message

import (
	"strings"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message/httpup"
	"github.com/tapline/tapline/reassemble/message/pmd"
)

// Default limits (see Limits).
const (
	DefaultMaxHeader  = 64 << 10
	DefaultMaxControl = 125
	DefaultMaxMessage = 1 << 30
)

// protocol of the connection as far as the decoder knows.
const (
	protoUnknown = iota
	protoWS      // WebSocket (handshake seen, or frames verified mid-stream)
	protoTCP     // raw TCP
)

// decoder implements Decoder.
type decoder struct {
	meta     Meta
	out      Output
	lim      Limits
	sides    [2]*side // by current direction label: 0 c2s, 1 s2c
	proto    int
	opened   bool
	req      *httpup.Message // the upgrade (or plain HTTP) request, if seen
	resp     *httpup.Message // the 101 response, if seen
	pmd      pmd.Params
	pmdKnown bool // the 101 response was seen: pmd is what it says
	dirKnown bool // which side is the client is certain
	swapped  bool
	firstNs  int64
}

// New returns the Decoder of one connection. Zero fields of limits take
// their defaults.
func New(meta Meta, out Output, limits Limits) Decoder {
	if limits.MaxHeader <= 0 {
		limits.MaxHeader = DefaultMaxHeader
	}
	if limits.MaxControl <= 0 {
		limits.MaxControl = DefaultMaxControl
	}
	if limits.MaxMessage <= 0 {
		limits.MaxMessage = DefaultMaxMessage
	}
	d := &decoder{meta: meta, out: out, lim: limits, dirKnown: meta.ClientKnown}
	for i, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
		d.sides[i] = newSide(d, dir)
	}
	if meta.Resume != nil {
		d.applyResume(meta.Resume)
	}
	return d
}

func dirIndex(dir proto.Direction) int {
	if dir == proto.ServerToClient {
		return 1
	}
	return 0
}

func (d *decoder) side(dir proto.Direction) *side { return d.sides[dirIndex(dir)] }

func (d *decoder) other(s *side) *side {
	if d.sides[0] == s {
		return d.sides[1]
	}
	return d.sides[0]
}

// Data implements Decoder.
func (d *decoder) Data(dir proto.Direction, b []byte, tsNs int64) {
	if len(b) == 0 {
		return
	}
	if d.firstNs == 0 {
		d.firstNs = tsNs
	}
	d.side(dir).data(b, tsNs)
}

// Gap implements Decoder.
func (d *decoder) Gap(dir proto.Direction, n int64, tsNs int64) {
	if n <= 0 {
		return
	}
	d.side(dir).gap(n, tsNs)
}

// Close implements Decoder.
func (d *decoder) Close(tsNs int64) {
	for _, s := range d.sides {
		s.flushHandshake(tsNs)
	}
	for _, s := range d.sides {
		s.close(tsNs)
	}
	d.open(tsNs)
}

// Stats implements Decoder.
func (d *decoder) Stats(dir proto.Direction) Stats { return d.side(dir).stats }

// fill sets the connection fields of a chunk.
func (d *decoder) fill(c *proto.Chunk, dir proto.Direction) {
	d.open(c.FirstNs)
	c.Conn = d.meta.Conn
	c.VNI = d.meta.VNI
	c.Client = d.meta.Client
	c.Server = d.meta.Server
	c.Dir = dir
}

// learnClient records that side s is the client (true) or the server, and
// asks the caller to swap directions when the guess was the other way.
func (d *decoder) learnClient(s *side, isClient bool) {
	if d.dirKnown {
		return
	}
	d.dirKnown = true
	if isClient == (s.dir == proto.ClientToServer) {
		return
	}
	d.swapped = true
	d.sides[0], d.sides[1] = d.sides[1], d.sides[0]
	d.sides[0].dir = proto.ClientToServer
	d.sides[1].dir = proto.ServerToClient
	d.meta.Client, d.meta.Server = d.meta.Server, d.meta.Client
	d.out.SwapDirections()
}

// headers left out of OpenEvent.Headers: they are either fields of the
// event or mechanics of the handshake.
var skipHeaders = map[string]bool{
	"host": true, "upgrade": true, "connection": true,
	"sec-websocket-key": true, "sec-websocket-version": true,
}

// open emits the OpenEvent once, before anything else of the connection.
func (d *decoder) open(ts int64) {
	if d.opened {
		return
	}
	d.opened = true
	ev := &proto.OpenEvent{
		Conn: d.meta.Conn, VNI: d.meta.VNI, Client: d.meta.Client, Server: d.meta.Server,
		Protocol: "tcp", FirstNs: d.firstNs,
	}
	if ev.FirstNs == 0 {
		ev.FirstNs = ts
	}
	if d.proto == protoWS {
		ev.Protocol = "websocket"
	}
	if d.req != nil {
		ev.Path = d.req.Target
		ev.Host = d.req.Get("Host")
		ev.Subprotocol = d.req.Get("Sec-WebSocket-Protocol")
		for _, name := range d.req.Names {
			if !skipHeaders[strings.ToLower(name)] {
				if ev.Headers == nil {
					ev.Headers = map[string]string{}
				}
				ev.Headers[name] = d.req.Get(name)
			}
		}
	}
	if d.resp != nil {
		ev.Subprotocol = d.resp.Get("Sec-WebSocket-Protocol")
		ev.Extensions = d.resp.Get("Sec-WebSocket-Extensions")
	}
	// Mid-stream: the TCP layer missed the start, and (for a WebSocket)
	// the handshake was not seen either.
	ev.MidStream = d.meta.MidStream && (d.proto != protoWS || (d.req == nil && d.resp == nil))
	d.resumeOpen(ev)
	d.out.Open(ev)
}

// pmdPossible reports whether RSV1 may mean permessage-deflate: it was
// negotiated, or the handshake's answer was not seen and the request (if
// seen) offered it.
func (d *decoder) pmdPossible() bool {
	if d.pmdKnown {
		return d.pmd.Enabled
	}
	if d.req != nil {
		return pmd.Parse(d.req.Get("Sec-WebSocket-Extensions")).Enabled
	}
	return true
}

// newInflater returns the inflater for the messages sent by side s.
func (d *decoder) newInflater(s *side) *pmd.Inflater {
	if !d.pmdKnown {
		return pmd.NewInflater(pmd.TakeoverUnknown, 15)
	}
	mode, bits := d.pmd.Direction(s.dir == proto.ClientToServer)
	return pmd.NewInflater(mode, bits)
}

// settleTCP decides that the connection is raw TCP: whatever each side
// holds (handshake bytes, hunted bytes) is emitted as raw runs, earliest
// side first.
func (d *decoder) settleTCP(ts int64) {
	if d.proto == protoTCP {
		return
	}
	d.proto = protoTCP
	first, second := d.sides[0], d.sides[1]
	if second.firstTs != 0 && (first.firstTs == 0 || second.firstTs < first.firstTs) {
		first, second = second, first
	}
	first.toTCP(ts)
	second.toTCP(ts)
}
