package reassemble

import (
	"testing"

	"github.com/coder/websocket"
)

// TestTLSCloseNotifyInboundOnly: an inbound-only wss:// session (only
// the external server's packets mirrored) whose end shows no FIN — the
// production client answered the server's close_notify with an RST, which
// is not mirrored. The decrypted close_notify ends the connection (reason
// close_notify) instead of the idle timeout (an hour here), every message
// exact.
func TestTLSCloseNotifyInboundOnly(t *testing.T) {
	cp := captureWSS(t, []int{200000, 3000}, websocket.CompressionContextTakeover)
	c, _ := runTLS(t, cp, tlsRun{s2cOnly: true, noFIN: true})
	if c.closeEv.Reason != CloseNotify {
		t.Fatalf("close reason %q", c.closeEv.Reason)
	}
	if c.closeEv.TLS == nil || c.closeEv.TLS.Undecryptable || c.closeEv.S2C.BytesMissing != 0 {
		t.Fatalf("close %+v", c.closeEv)
	}
	requireBinaryExact(t, c, cp.msgs)
}

// TestTLSCloseNotifyBothWays: both directions mirrored, each sent its
// close_notify, and neither FIN nor RST was mirrored: the connection ends
// at the second close_notify.
func TestTLSCloseNotifyBothWays(t *testing.T) {
	cp := captureWSS(t, []int{3000, 70000}, websocket.CompressionDisabled)
	c, _ := runTLS(t, cp, tlsRun{noFIN: true})
	if c.closeEv.Reason != CloseNotify || c.closeEv.TLS == nil || c.closeEv.TLS.Undecryptable {
		t.Fatalf("close %+v", c.closeEv)
	}
	if n := c.closeEv.S2C.MessagesComplete; n < int64(len(cp.msgs)) {
		t.Fatalf("%d messages complete", n)
	}
}
