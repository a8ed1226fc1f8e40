package tlsdec

// Mid-stream detection: a connection whose capture started after its
// handshake (reassemble started, or the mirror came up, while it was
// running) shows no hello, only records. Their headers are plaintext:
// a content type, a version and a length, so consecutive records chain
// (each header starts where the previous record's length ends). A chain
// of MidStreamChain plausible headers is taken as TLS: in random bytes a
// plausible header occurs about once per million positions, and in text
// or WebSocket framing bytes 0x14-0x17 followed by 0x03 do not occur.

// MidStreamChain is how many consecutive plausible record headers make a
// stream TLS.
const MidStreamChain = 3

// MidStreamScan is the most bytes MidStreamRecords needs: the search for
// the first boundary (one whole record, when the capture started inside
// one) plus the chain.
const MidStreamScan = 5 + maxCiphertext + MidStreamChain*(5+maxCiphertext)

// plausibleHeader is a record header as a TLS 1.0-1.3 peer sends it after
// its handshake: content type ChangeCipherSpec to ApplicationData,
// version 3.1-3.3 (TLS 1.3 records say 3.3), a body that fits.
func plausibleHeader(h []byte) bool {
	n := hdrLen(h)
	return h[0] >= recordCCS && h[0] <= recordAppData && h[1] == 3 && h[2] >= 1 && h[2] <= 3 && n > 0 && n <= maxCiphertext
}

// MidStreamRecords reports whether b, the first bytes seen of one
// direction, are TLS records: MidStreamChain consecutive plausible
// headers starting at offset 0 or, with anyOffset (the capture may have
// started inside a record), at any offset within the first record's
// reach. more: undecided, more bytes of the direction may decide. final:
// no more bytes come for the decision (a gap, the end, a time bound):
// then a chain that ends exactly at the end of b also counts (from
// offset 0: one record is enough; elsewhere two).
func MidStreamRecords(b []byte, anyOffset, final bool) (yes, more bool) {
	last := 0
	if anyOffset {
		last = min(len(b)-5, maxCiphertext+5)
		if len(b) < maxCiphertext+10 {
			more = true // the first boundary may be further on
		}
	}
	for o := 0; o <= last && o+5 <= len(b); o++ {
		if !plausibleHeader(b[o:]) {
			continue
		}
		n, p := 0, o
		for p+5 <= len(b) && plausibleHeader(b[p:]) && n < MidStreamChain {
			n++
			p += 5 + hdrLen(b[p:])
		}
		switch {
		case n >= MidStreamChain:
			return true, false
		case p+5 <= len(b) && !plausibleHeader(b[p:]):
			// The chain breaks: not a boundary.
		case final && p == len(b) && (n >= 2 || o == 0):
			return true, false
		default:
			more = true
		}
	}
	return false, more && !final
}
