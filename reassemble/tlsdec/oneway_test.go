package tlsdec

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"
	"time"
)

// TestServerDirectionOnly: only the server's direction was mirrored (a
// production client, inbound-only mirroring): no ClientHello, so the
// secrets are found by trying the stored ones (among 500 others) on the
// server's first protected record; every byte the server sent decrypts.
func TestServerDirectionOnly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ver   uint16
		suite []uint16
	}{
		{"tls13", tls.VersionTLS13, nil},
		{"tls12-gcm", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}},
		{"tls12-cbc", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := runSession(t, session{maxVersion: tc.ver, suites: tc.suite, c2s: []int{100}, s2c: sizes})
			ks := NewKeyStore(10000, time.Hour)
			now := time.Now()
			for i := 0; i < 250; i++ {
				ks.AddLines([]byte(fmt.Sprintf("CLIENT_RANDOM %064x %096x\nSERVER_HANDSHAKE_TRAFFIC_SECRET %064x %064x\n", i+1, i, i+1, i)), now)
			}
			ks.AddLines(cp.keylog, now)
			for i := 250; i < 500; i++ {
				ks.AddLines([]byte(fmt.Sprintf("CLIENT_RANDOM %064x %096x\n", i+1, i)), now)
			}
			out := &collect{}
			c := NewConn(ks, Limits{}, out)
			feed(c, [2][]byte{nil, cp.s2c}, 1460, 1)
			c.Close(now)
			if c.Undecryptable() || !bytes.Equal(out.data[1].Bytes(), cp.sentS2C) || out.lost[1] != 0 {
				t.Fatalf("undecryptable %v %q: %d/%d bytes, lost %d", c.Undecryptable(), c.Failed(), out.data[1].Len(), len(cp.sentS2C), out.lost[1])
			}
			if !c.Info().ClientHelloMissing {
				t.Error("not reported")
			}
		})
	}
}
