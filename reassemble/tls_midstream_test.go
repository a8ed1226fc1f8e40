package reassemble

import (
	"testing"

	"github.com/coder/websocket"
)

// TestTLSMidStream: the capture of a wss:// push starts after the
// handshake (reassemble started while the connection was running), inside
// a record, with neither hello seen. The connection is TLS, undecryptable
// (no client random to match the key log with), and none of its
// ciphertext is published as messages.
func TestTLSMidStream(t *testing.T) {
	cp := captureWSS(t, []int{3000, 1 << 20, 500000}, websocket.CompressionDisabled)
	frames := tlsFrames(t, cp.writes, [2][]byte{cp.c2s, cp.s2c}, nil)
	for _, start := range []int{len(frames) / 3, len(frames)/3 + 1} {
		c, _ := runTLS(t, cp, tlsRun{startAt: start})
		if c.open == nil || c.open.TLS == nil || !c.open.TLS.Undecryptable || c.open.TLS.Error != midError || !c.open.MidStream {
			t.Fatalf("start %d: open %+v tls %+v", start, c.open, c.open.TLS)
		}
		if c.closeEv.TLS == nil || !c.closeEv.TLS.Undecryptable {
			t.Fatalf("start %d: close %+v", start, c.closeEv)
		}
		for d, ms := range c.msgs {
			if len(ms) > 0 || c.bytes[d] > 0 {
				t.Fatalf("start %d: %d messages, %d bytes of ciphertext published (%s)", start, len(ms), c.bytes[d], d)
			}
		}
	}
}
