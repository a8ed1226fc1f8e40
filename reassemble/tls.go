package reassemble

import (
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tlsdec"
)

// TLS between TCP reassembly and the message decoders. A connection
// whose first bytes (in either direction) are a ClientHello (or a
// ServerHello: the client's direction not mirrored) is decrypted
// with the secrets of the key store (fed from TAPLINE_KEYS, see keys.go);
// its plaintext application data goes to the message decoder exactly as
// a plaintext connection's bytes do, its losses as gaps in plaintext
// bytes. Any other connection goes to the decoder unchanged.

// tls layer modes.
const (
	tlsDetect = iota
	tlsOn
	tlsOff
	tlsLost // continues a TLS connection closed idle/evicted: undecryptable
)

// tlsCarry is what a decrypted TLS connection closed idle, evicted or by
// a sequence jump leaves for a connection continuing it on its 5-tuple:
// the record state is not kept, so the continuation cannot be decrypted.
type tlsCarry struct{ conn string }

// lostError is the open event's error of such a continuation.
const lostError = "continues a TLS connection whose record state was dropped (idle, evicted or sequence jump)"

// maxDetect is the most bytes held while deciding whether a connection is
// TLS (a ClientHello's first 6 bytes decide; this is only reached when
// one direction speaks and the other sends less than 6 bytes).
const maxDetect = 64 << 10

// A connection without hello is held up to tlsdec.MidStreamScan bytes (or
// midWait) to find its record boundaries (see records).

type pendingData struct {
	dir proto.Direction
	b   []byte
	ts  int64
}

// tlsLayer is a message.Decoder that decrypts and passes the plaintext to
// the real decoder.
type tlsLayer struct {
	c      *conn
	inner  message.Decoder
	mode   int
	pend   []pendingData
	pendN  int
	first  [2][]byte // first bytes of each direction while detecting
	td     *tlsdec.Conn
	ts     int64 // capture time of the bytes being decrypted
	closed bool
	ended  bool // every direction mirrored sent close_notify: the close was asked for

	lostBytes [2]int64 // tlsLost: ciphertext bytes not published
	resumes   string   // tlsLost: the connection it continues
	lostWhy   string   // tlsLost: why it cannot be decrypted (the open event's error)
	detectTs  int64    // capture time of the first bytes held while detecting
}

func newTLSLayer(c *conn, inner message.Decoder) *tlsLayer {
	return &tlsLayer{c: c, inner: inner, lostWhy: lostError}
}

// Data implements message.Decoder.
func (l *tlsLayer) Data(dir proto.Direction, b []byte, ts int64) {
	switch l.mode {
	case tlsOn:
		l.ts = ts
		l.td.Data(tlsDir(dir), b, time.Now())
		l.c.w.tlsActive(l.c)
		l.checkEnd()
		return
	case tlsOff:
		l.inner.Data(dir, b, ts)
		return
	case tlsLost:
		l.lostBytes[dirIndex(dir)] += int64(len(b))
		return
	}
	i := dirIndex(dir)
	if len(l.first[i]) < tlsdec.MidStreamScan {
		k := min(tlsdec.MidStreamScan-len(l.first[i]), len(b))
		l.first[i] = append(l.first[i], b[:k]...)
	}
	if len(l.pend) == 0 {
		l.detectTs = ts
	}
	l.pend = append(l.pend, pendingData{dir, append([]byte(nil), b...), ts})
	l.pendN += len(b)
	yes, need := tlsdec.LooksLikeClientHello(l.first[i])
	sh, needSH := tlsdec.LooksLikeServerHello(l.first[i])
	switch {
	case yes:
		l.start(dir)
	case sh:
		// A ServerHello first: the ClientHello was not mirrored (only
		// the inbound direction of a production client); the secrets
		// are found by trying the stored ones.
		l.start(flip(dir))
	case (need || needSH) && l.pendN < maxDetect:
	default:
		l.records(ts-l.detectTs > int64(midWait))
	}
}

// midWait bounds (capture time) how long the first bytes of a connection
// without hello are held while deciding whether they are TLS records.
const midWait = time.Second

// midError is the open event's error of a TLS connection seen only after
// its handshake.
const midError = "started mid-stream: no hello seen, the secrets cannot be matched (no client random)"

// records decides a connection whose first bytes are no hello: TLS
// records (a connection seen only after its handshake, e.g. running when
// the capture started) are undecryptable, never published; anything else
// is passed on as it is. Undecided (a boundary not found yet) it waits
// for more bytes, unless final.
func (l *tlsLayer) records(final bool) {
	more := false
	for i := range l.first {
		if len(l.first[i]) == 0 {
			continue
		}
		yes, m := tlsdec.MidStreamRecords(l.first[i], l.c.meta.MidStream, final || len(l.first[i]) >= tlsdec.MidStreamScan)
		if yes {
			l.mode, l.lostWhy = tlsLost, midError
			for _, p := range l.pend {
				l.lostBytes[dirIndex(p.dir)] += int64(len(p.b))
			}
			l.pend, l.pendN, l.first = nil, 0, [2][]byte{}
			return
		}
		more = more || m
	}
	if more {
		l.c.w.tlsActive(l.c) // polled: the time bound is checked at the tick too
		return
	}
	l.plain()
}

// start switches to TLS: the direction that sent the ClientHello is the
// client.
func (l *tlsLayer) start(client proto.Direction) {
	c := l.c
	if client == proto.ServerToClient {
		c.SwapDirections()
		for i := range l.pend {
			l.pend[i].dir = flip(l.pend[i].dir)
		}
	}
	// A fresh decoder: the client and server are certain now.
	c.meta.ClientKnown = true
	l.inner = c.w.e.newDecoder(c.meta, c, c.w.e.limits)
	l.mode = tlsOn
	l.td = tlsdec.NewConn(c.w.e.keys, tlsdec.Limits{HoldBytes: c.w.e.cfg.TLSHoldBytes, HoldTime: c.w.e.cfg.TLSHoldTime}, l)
	c.w.e.m.tlsConns.Inc()
	pend := l.pend
	l.pend, l.pendN, l.first = nil, 0, [2][]byte{}
	for _, p := range pend {
		l.ts = p.ts
		l.td.Data(tlsDir(p.dir), p.b, time.Now())
	}
	c.w.tlsActive(c)
}

// plain passes what was held to the decoder unchanged. The decoder may
// learn the client from the first of them and swap the connection's
// directions: the rest were named with the old ones.
func (l *tlsLayer) plain() {
	l.mode = tlsOff
	pend := l.pend
	l.pend, l.pendN, l.first = nil, 0, [2][]byte{}
	client := l.c.meta.Client
	for _, p := range pend {
		dir := p.dir
		if l.c.meta.Client != client {
			dir = flip(dir)
		}
		l.inner.Data(dir, p.b, p.ts)
	}
}

// Gap implements message.Decoder.
func (l *tlsLayer) Gap(dir proto.Direction, n int64, ts int64) {
	if l.mode == tlsDetect {
		client := l.c.meta.Client
		l.records(true)
		if l.c.meta.Client != client {
			dir = flip(dir) // the bytes held decided the client (see plain)
		}
	}
	switch l.mode {
	case tlsOn:
		l.ts = ts
		l.td.Gap(tlsDir(dir), n, time.Now())
		l.c.w.tlsActive(l.c)
		l.checkEnd()
		return
	case tlsLost:
		return
	}
	l.inner.Gap(dir, n, ts)
}

// poll retries records waiting for keys and gives up those held too
// long (the worker's tick).
func (l *tlsLayer) poll(ts int64) {
	if l.mode == tlsDetect && len(l.pend) > 0 && ts-l.detectTs > int64(midWait) {
		l.records(true)
	}
	if l.mode == tlsOn && !l.closed {
		l.ts = ts
		l.td.Poll(time.Now())
		l.checkEnd()
	}
}

// CloseNotify is the close reason of a TLS connection ended by its
// close_notify alerts: every direction mirrored sent one (a direction
// never seen — inbound-only mirroring — needs none). The FIN or RST that
// follows may never be mirrored (a production client answering the
// server's close_notify with an RST on an inbound-only session), and the
// connection would otherwise stay open until the idle timeout.
const CloseNotify = "close_notify"

// checkEnd asks the tracker to close the connection once every direction
// mirrored has sent its close_notify: nothing more of its application
// data can come.
func (l *tlsLayer) checkEnd() {
	if l.ended || l.closed {
		return
	}
	notified := false
	for d := range 2 {
		switch {
		case l.td.CloseNotified(d):
			notified = true
		case l.c.tc.Seen(protoDir(d)):
			return
		}
	}
	if notified {
		l.ended = true
		l.c.tc.End(CloseNotify)
	}
}

// detecting reports whether first bytes are held while deciding whether
// they are TLS records.
func (l *tlsLayer) detecting() bool { return l.mode == tlsDetect && len(l.pend) > 0 }

// waiting reports whether ciphertext waits for keys that may still come.
func (l *tlsLayer) waiting() bool { return l.mode == tlsOn && !l.closed && l.td.Waiting() }

// Close implements message.Decoder.
func (l *tlsLayer) Close(ts int64) {
	if l.mode == tlsDetect {
		l.records(true)
	}
	if l.mode == tlsLost && !l.closed {
		l.closed = true
		l.c.w.e.m.tlsUndecryptable.Inc()
		l.c.Open(&proto.OpenEvent{Protocol: "tcp", MidStream: true, Resumes: l.resumes, FirstNs: ts})
		return
	}
	if l.mode == tlsOn && !l.closed {
		l.ts = ts
		l.td.Close(time.Now())
		l.closed = true
		m := l.c.w.e.m
		if l.td.Undecryptable() {
			m.tlsUndecryptable.Inc()
		}
		for d, dir := range []string{string(proto.ClientToServer), string(proto.ServerToClient)} {
			st := l.td.Stats(d)
			m.tlsRecords.WithLabelValues(dir, "decrypted").Add(float64(st.Records))
			m.tlsRecords.WithLabelValues(dir, "lost").Add(float64(st.RecordsLost))
			m.tlsRecords.WithLabelValues(dir, "undecryptable").Add(float64(st.RecordsUndecryptable))
		}
	}
	l.inner.Close(ts)
}

// Stats implements message.Decoder.
func (l *tlsLayer) Stats(dir proto.Direction) message.Stats { return l.inner.Stats(dir) }

// Memory implements message.Sizer: held ciphertext and partial records
// count in the --max-memory budget.
func (l *tlsLayer) Memory() int64 {
	n := int64(l.pendN) + int64(cap(l.first[0])+cap(l.first[1]))
	if l.td != nil {
		n += l.td.Memory()
	}
	if s, ok := l.inner.(message.Sizer); ok {
		n += s.Memory()
	}
	return n
}

// Plaintext implements tlsdec.Sink.
func (l *tlsLayer) Plaintext(dir int, b []byte) {
	d := protoDir(dir)
	l.inner.Data(d, b, l.ts)
}

// Lost implements tlsdec.Sink.
func (l *tlsLayer) Lost(dir int, n int64, reason string) {
	l.inner.Gap(protoDir(dir), n, l.ts)
}

// openInfo is the open event's tls object.
func (l *tlsLayer) openInfo() *proto.TLSInfo {
	if l.mode == tlsLost {
		return &proto.TLSInfo{Undecryptable: true, Error: l.lostWhy}
	}
	if l.mode != tlsOn {
		return nil
	}
	in := l.td.Info()
	return &proto.TLSInfo{
		Version:            tlsdec.VersionName(in.Version),
		CipherSuite:        suiteName(in.CipherSuite),
		ServerName:         in.ServerName,
		ALPN:               in.ALPN,
		Resumed:            in.Resumed,
		ClientHelloMissing: in.ClientHelloMissing,
		Undecryptable:      l.td.Undecryptable(),
		Error:              l.td.Failed(),
	}
}

// closeInfo is the close event's tls object.
func (l *tlsLayer) closeInfo() *proto.TLSClose {
	if l.mode == tlsLost {
		return &proto.TLSClose{Undecryptable: true}
	}
	if l.mode != tlsOn {
		return nil
	}
	loss := func(d int) proto.TLSLoss {
		st := l.td.Stats(d)
		tl := proto.TLSLoss{Records: st.Records, RecordsLost: st.RecordsLost, RecordsUndecryptable: st.RecordsUndecryptable, PlaintextLost: st.LostBytes}
		if st.LostBytesMin != st.LostBytes {
			least := st.LostBytesMin
			tl.PlaintextLostMin = &least
		}
		return tl
	}
	return &proto.TLSClose{Undecryptable: l.td.Undecryptable(), C2S: loss(0), S2C: loss(1)}
}

func suiteName(id uint16) string {
	if id == 0 {
		return ""
	}
	return tlsdec.SuiteName(id)
}

func tlsDir(d proto.Direction) int {
	if d == proto.ServerToClient {
		return tlsdec.ServerToClient
	}
	return tlsdec.ClientToServer
}

func protoDir(d int) proto.Direction {
	if d == tlsdec.ServerToClient {
		return proto.ServerToClient
	}
	return proto.ClientToServer
}

func flip(d proto.Direction) proto.Direction {
	if d == proto.ServerToClient {
		return proto.ClientToServer
	}
	return proto.ServerToClient
}

// OpenNow implements message.Opener: a connection whose ciphertext can no
// longer be decrypted opens as what its close would open it as.
func (l *tlsLayer) OpenNow(ts int64) {
	if l.mode == tlsLost {
		l.c.Open(&proto.OpenEvent{Protocol: "tcp", MidStream: true, Resumes: l.resumes, FirstNs: ts})
		return
	}
	if o, ok := l.inner.(message.Opener); ok {
		o.OpenNow(ts)
	}
}
