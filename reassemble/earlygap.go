package reassemble

import (
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
)

// maxEarlyGaps bounds the gap events a connection holds while its decoder
// has not emitted the open event; one more makes the decoder open with
// what it knows (the open event of a connection whose start is lost names
// no path either way).
const maxEarlyGaps = 16

// maxEarlyGapsWaiting bounds them while the connection's TLS layer holds
// ciphertext waiting for its keys: the decoder cannot know the protocol
// before the keys come (a forced open would name a WebSocket "tcp", and
// replay would leave its messages undelivered), and a congested mirror
// loses a segment every few KiB of the held ciphertext. 4096 gap events
// (768 KiB at earlyGapSize each, charged to the memory budget) stay below
// the --tls-hold-bytes (4 MiB) the held ciphertext itself may take.
const maxEarlyGapsWaiting = 4096

// earlyGapSize is what one held gap event is charged in the memory
// budget: the event, its id and the slice entry.
const earlyGapSize = 192

// earlyGap is a gap event that came before the connection's open event.
type earlyGap struct {
	id string
	ev *proto.GapEvent
}

// holdGap keeps a gap event until the open event is published: the wire
// contract puts the open event first on the connection's subject. The TCP
// layer reports a lost start of the stream as a gap before any byte, and
// the decoder opens only at its first message (or its close), when it
// knows the upgrade request.
func (c *conn) holdGap(id string, ev *proto.GapEvent, tsNs int64) {
	c.early = append(c.early, earlyGap{id, ev})
	if len(c.early) > c.earlyGapLimit() {
		c.openNow(tsNs)
	}
}

// earlyGapLimit is the number of gap events the connection holds for its
// open event: more while its TLS layer waits for keys.
func (c *conn) earlyGapLimit() int {
	if c.tls != nil && c.tls.waiting() {
		return maxEarlyGapsWaiting
	}
	return maxEarlyGaps
}

// openNow makes the connection's open event published now: by the
// decoder when it can, else with what the connection knows.
func (c *conn) openNow(tsNs int64) {
	if c.opened {
		return
	}
	if o, ok := c.dec.(message.Opener); ok {
		o.OpenNow(tsNs)
	}
	if !c.opened {
		c.Open(&proto.OpenEvent{Protocol: "tcp", MidStream: c.meta.MidStream})
	}
}

// flushEarlyGaps publishes the gap events held for the open event, in
// the order they came.
func (c *conn) flushEarlyGaps() {
	for _, g := range c.early {
		c.event(proto.KindGap, g.id, g.ev)
	}
	c.early = nil
}
