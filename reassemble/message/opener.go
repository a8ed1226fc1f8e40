package message

// Opener is implemented by a Decoder that can be asked to emit its open
// event now, with what it knows so far (the reassembler does so when a
// connection keeps reporting gaps before its decoder decided it, so the
// gap events waiting for the open event stay bounded).
type Opener interface {
	// OpenNow emits the open event if it was not emitted yet.
	OpenNow(tsNs int64)
}

// OpenNow implements Opener.
func (d *decoder) OpenNow(tsNs int64) { d.open(tsNs) }
