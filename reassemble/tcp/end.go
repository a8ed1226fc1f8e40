package tcp

import "github.com/tapline/tapline/proto"

// Ended by the handler: the protocol above TCP said the connection is
// over (a TLS close_notify in every direction mirrored) before TCP did —
// the FIN or RST that follows may not be mirrored at all (inbound-only
// mirroring of a production client that answers with an RST).

// End asks the tracker to close the connection with reason once the
// packet being processed is done (the handler may call it from Data). A
// connection ended this way is remembered like one closed by FIN or RST:
// its late packets are stragglers, not a new connection.
func (c *Conn) End(reason string) {
	if c.endReason == "" {
		c.endReason = reason
	}
}

// Seen reports whether a packet of direction dir was seen.
func (c *Conn) Seen(dir proto.Direction) bool {
	ix := c.clientIx
	if dir == proto.ServerToClient {
		ix ^= 1
	}
	return c.halves[ix].seen
}

// closeEnded closes c if its handler asked to (End).
func (t *Tracker) closeEnded(c *Conn) bool {
	if c.endReason == "" || c.closed {
		return false
	}
	t.close(c, c.endReason, t.nowNs)
	return true
}

// CloseEnded closes c now if its handler asked to with End, outside of
// a packet (e.g. records decrypted when their keys arrived); it reports
// whether it did.
func (t *Tracker) CloseEnded(c *Conn) bool { return t.closeEnded(c) }
