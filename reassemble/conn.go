package reassemble

import (
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tcp"
)

// conn is the reassembler's state of one connection: its decoder, where
// its entries go, and the frame batches held for it. It is the TCP
// layer's Handler and the decoder's Output.
type conn struct {
	w       *worker
	tc      *tcp.Conn
	dec     message.Decoder
	meta    message.Meta
	subject string
	vni     string

	tls        *tlsLayer  // set when TLS detection is on (--tls)
	linger     *closeArgs // closed by TCP while ciphertext waits for keys: the close is finished later
	holds      []*batch   // batches with frames of this connection, not yet released
	replayable bool       // all its batches are held: a failover rebuilds it exactly
	queued     bool       // in the worker's hold queue
	unheldIn   *batch     // the batch in whose record it is (see worker.recordUnheld)
	released   []*batch   // batches it stopped holding, released once its record is stored
	closed     bool
	opened     bool       // its open event is published
	early      []earlyGap // gap events waiting for the open event (see earlygap.go)
}

func (w *worker) openConn(tc *tcp.Conn) tcp.Handler {
	c := &conn{
		w:          w,
		tc:         tc,
		subject:    proto.MsgsSubject(tc.VNI, w.shard),
		vni:        strconv.FormatUint(uint64(tc.VNI), 10),
		replayable: w.e.cfg.MaxHeldBatches > 0,
	}
	c.meta = message.Meta{
		Conn:        tc.ID,
		VNI:         tc.VNI,
		Client:      tc.Client().String(),
		Server:      tc.Server().String(),
		ClientKnown: tc.SYN,
		MidStream:   tc.Mid,
	}
	if r, ok := tc.Resumed.(*message.Resume); ok && r != nil {
		// The connection continues one closed idle, evicted or after a
		// sequence jump: decode it as what that one was.
		rr := *r
		rr.Contiguous = [2]bool{tc.Continued(proto.ClientToServer), tc.Continued(proto.ServerToClient)}
		c.meta.Resume = &rr
		w.e.m.resumed.Inc()
		// A successor rebuilds it from its held batches and the record of
		// its predecessor (done.go). Without records it could not: it is
		// closed (shutdown) at a hand-over rather than published again
		// differently under the same ids.
		c.replayable = c.replayable && w.e.kv != nil
	}
	tc.User = c
	c.dec = w.e.newDecoder(c.meta, c, w.e.limits)
	if tcr, ok := tc.Resumed.(tlsCarry); ok && w.e.keys != nil {
		// It continues a decrypted TLS connection whose record state is
		// gone: its bytes are ciphertext that cannot be decrypted any
		// more, never published (reported undecryptable).
		w.e.m.resumed.Inc()
		c.replayable = false
		c.tls = newTLSLayer(c, c.dec)
		c.tls.mode, c.tls.resumes = tlsLost, tcr.conn
		c.dec = c.tls
	} else if w.e.keys != nil && c.meta.Resume == nil {
		// A resumed connection continues what its predecessor was; TLS is
		// detected from a ClientHello only.
		c.tls = newTLSLayer(c, c.dec)
		c.dec = c.tls
	}
	w.e.m.connsOpened.Inc()
	return c
}

// Open publishes the connection's open event, once, and then the gap
// events that came before it.
func (c *conn) Open(ev *proto.OpenEvent) {
	if c.opened {
		return
	}
	c.opened = true
	if ev.Conn == "" {
		ev.Conn = c.meta.Conn
	}
	ev.VNI = c.meta.VNI
	if ev.Client == "" {
		ev.Client, ev.Server = c.meta.Client, c.meta.Server
	}
	if ev.FirstNs == 0 {
		ev.FirstNs = c.tc.FirstNs
	}
	if c.tls != nil {
		ev.TLS = c.tls.openInfo()
	}
	if !c.w.e.cfg.KeepCredentials {
		stripCredentials(ev)
	}
	c.event(proto.KindOpen, c.meta.Conn+"/open", ev)
	c.flushEarlyGaps()
}

// Chunk publishes one message chunk.
func (c *conn) Chunk(ch *proto.Chunk, body []byte) {
	ch.Conn, ch.VNI = c.meta.Conn, c.meta.VNI
	ch.Client, ch.Server = c.meta.Client, c.meta.Server
	m := &nats.Msg{Subject: c.subject, Header: ch.Header(), Data: append([]byte(nil), body...)}
	dir := string(ch.Dir)
	c.w.e.m.messageBytes.WithLabelValues(dir, ch.Opcode).Add(float64(len(body)))
	if ch.Last {
		c.w.e.m.messages.WithLabelValues(dir, ch.Opcode, strconv.FormatBool(ch.Complete)).Inc()
		if !ch.Complete {
			c.w.e.m.incomplete.WithLabelValues(dir).Inc()
		}
		if ch.WireSize > 0 && ch.Complete {
			c.w.e.m.inflation.Observe(float64(ch.Size) / float64(ch.WireSize))
		}
		if ch.Reason == proto.ReasonInflationLimit {
			c.w.e.m.inflationCut.Inc()
		}
	}
	c.w.publish(m)
}

// SwapDirections exchanges client and server from now on.
func (c *conn) SwapDirections() {
	c.tc.SwapDirections()
	c.meta.Client, c.meta.Server = c.meta.Server, c.meta.Client
	c.meta.ClientKnown = true
	for i, g := range c.early {
		// Held before the decoder knew the client: named with the old
		// directions.
		g.ev.Dir = flip(g.ev.Dir)
		c.early[i].id = gapID(g.ev)
	}
}

// gapID is the Msg-Id of a gap event: one per direction and offset.
func gapID(ev *proto.GapEvent) string {
	return ev.Conn + "/gap/" + string(ev.Dir) + "/" + strconv.FormatInt(ev.Offset, 10)
}

// Data passes in-order stream bytes to the decoder.
func (c *conn) Data(dir proto.Direction, b []byte, tsNs int64) {
	c.w.streamBytes[dirIndex(dir)] += int64(len(b))
	c.dec.Data(dir, b, tsNs)
}

// Gap publishes a gap event and tells the decoder.
func (c *conn) Gap(dir proto.Direction, offset, n int64, tsNs int64, reason string) {
	c.w.e.m.gapBytes.WithLabelValues(c.vni).Add(float64(n))
	c.w.e.m.gaps.WithLabelValues(c.vni, reason).Inc()
	ev := &proto.GapEvent{Conn: c.meta.Conn, Dir: dir, Offset: offset, Bytes: n, AtNs: tsNs, Reason: reason}
	id := gapID(ev)
	if !c.opened {
		// The decoder has not decided the connection yet (its open event
		// names what the first bytes say): the gap event waits for it.
		c.holdGap(id, ev, tsNs)
	} else {
		c.event(proto.KindGap, id, ev)
	}
	c.dec.Gap(dir, n, tsNs)
}

// Close ends the decoder, publishes the loss summary and releases the
// connection's batches.
func (c *conn) Close(reason string, tsNs int64, c2s, s2c tcp.Loss) {
	if reason == tcp.CloseIdle || reason == tcp.CloseEvicted || reason == tcp.CloseMemory || reason == tcp.CloseSeqJump || reason == tcp.CloseShutdown {
		// What a later connection on the 5-tuple needs to continue this
		// one (the tracker keeps it, bounded by --max-connections; after a
		// shutdown, the next owner reads it from the connection's record).
		// A decrypted TLS connection cannot be continued.
		dec := c.dec
		if c.tls != nil {
			dec = c.tls.inner
			if c.tls.mode == tlsOn || c.tls.mode == tlsLost {
				dec = nil
				c.tc.Carry = tlsCarry{c.meta.Conn}
			}
		}
		if dec != nil {
			if r := message.Snapshot(dec, c.meta.Conn); r != nil {
				c.tc.Carry = r
			}
		}
	}
	if c.tls != nil && c.tls.waiting() && reason != tcp.CloseShutdown && reason != tcp.CloseMemory {
		// Its keys may still come (the shipper is behind the mirror): the
		// close is finished when they do or the hold time has passed.
		c.linger = &closeArgs{reason, tsNs, c2s, s2c}
		c.w.tlsActive(c)
		if c.w.lingerSet == nil {
			c.w.lingerSet = map[*conn]struct{}{}
		}
		c.w.lingerSet[c] = struct{}{}
		c.w.capLingering()
		return
	}
	c.finishClose(reason, tsNs, c2s, s2c)
}

// closeArgs is a close waiting for keys.
type closeArgs struct {
	reason   string
	tsNs     int64
	c2s, s2c tcp.Loss
}

// finishClose ends the decoder, publishes the loss summary and releases
// the batches.
func (c *conn) finishClose(reason string, tsNs int64, c2s, s2c tcp.Loss) {
	c.linger = nil
	delete(c.w.lingerSet, c)
	c.dec.Close(tsNs)
	c.openNow(tsNs) // a decoder that never opened: the close is not first
	ev := &proto.CloseEvent{Conn: c.meta.Conn, Reason: reason, AtNs: tsNs,
		C2S: c.dirLoss(proto.ClientToServer, c2s), S2C: c.dirLoss(proto.ServerToClient, s2c)}
	if c.tls != nil {
		ev.TLS = c.tls.closeInfo()
	}
	r := c.w.record(c, reason, tsNs)
	cm, err := proto.EventMsg(c.subject, proto.KindClose, c.meta.Conn, c.meta.VNI, c.meta.Conn+"/close", ev)
	if err != nil {
		c.w.e.log.Error("encode event", "err", err)
	}
	m := c.w.e.m
	m.connsClosed.WithLabelValues(reason).Inc()
	for i, l := range []tcp.Loss{c2s, s2c} {
		d := string(proto.ClientToServer)
		if i == 1 {
			d = string(proto.ServerToClient)
		}
		m.retransBytes.WithLabelValues(d).Add(float64(l.Retrans))
		m.truncated.Add(float64(l.Truncated))
	}
	c.closed = true
	c.w.retire(c, cm, r) // releases the batches once the close is stored
}

// Memory reports what the connection's decoder holds (tcp.Sizer); the
// holds slice and the gap events held for the open event are charged too
// (the batches themselves are bounded by --max-held-batches).
func (c *conn) Memory() int64 {
	n := int64(cap(c.holds))*8 + int64(len(c.early))*earlyGapSize
	if s, ok := c.dec.(message.Sizer); ok {
		n += s.Memory()
	}
	return n
}

func (c *conn) dirLoss(dir proto.Direction, l tcp.Loss) proto.DirLoss {
	st := c.dec.Stats(dir)
	m := c.w.e.m
	if st.BadFrames > 0 {
		m.decodeFailures.WithLabelValues("bad_frame").Add(float64(st.BadFrames))
	}
	if st.Undecodable > 0 {
		m.decodeFailures.WithLabelValues("undecodable").Add(float64(st.Undecodable))
	}
	if st.MessagesLost > 0 {
		m.decodeFailures.WithLabelValues("lost_message").Add(float64(st.MessagesLost))
	}
	if st.Resyncs > 0 {
		m.decodeFailures.WithLabelValues("resync").Add(float64(st.Resyncs))
	}
	return proto.DirLoss{
		BytesSeen:          l.BytesSeen,
		BytesImplied:       l.BytesImplied,
		BytesMissing:       l.BytesImplied - l.BytesSeen,
		Gaps:               l.Gaps,
		MessagesComplete:   st.MessagesComplete,
		MessagesIncomplete: st.MessagesIncomplete,
		ControlFrames:      st.ControlFrames,
		ControlIncomplete:  st.ControlIncomplete,
		Undecodable:        st.Undecodable,
		MessagesLost:       st.MessagesLost,
	}
}

func (c *conn) event(kind proto.Kind, id string, body any) {
	m, err := proto.EventMsg(c.subject, kind, c.meta.Conn, c.meta.VNI, id, body)
	if err != nil {
		c.w.e.log.Error("encode event", "err", err)
		return
	}
	c.w.publish(m)
}

func dirIndex(d proto.Direction) int {
	if d == proto.ServerToClient {
		return 1
	}
	return 0
}
