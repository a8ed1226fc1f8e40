package tlsdec

import (
	"crypto/tls"
	"testing"
	"time"
)

// TestResumptionAndHRR: a resumed session (TLS 1.3 PSK, TLS 1.2 ticket
// and session id) and a HelloRetryRequest decrypt exactly.
func TestResumptionAndHRR(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ver       uint16
		suites    []uint16
		noTickets bool
	}{
		{"tls13-psk", tls.VersionTLS13, nil, false},
		{"tls12-ticket", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(4)
			first := runSession(t, session{maxVersion: tc.ver, suites: tc.suites, cache: cache, noTickets: tc.noTickets, c2s: []int{10}, s2c: []int{10}})
			if first.resumed {
				t.Fatal("first session resumed")
			}
			cp := runSession(t, session{maxVersion: tc.ver, suites: tc.suites, cache: cache, noTickets: tc.noTickets, c2s: sizes, s2c: sizes})
			if !cp.resumed {
				t.Fatal("second session not resumed")
			}
			// One key store for both, as reassemble has: Go logs no
			// CLIENT_RANDOM for a resumed TLS 1.2 session; the session's
			// master secret is found by its ticket or session id.
			ks := NewKeyStore(100, 0)
			for _, x := range []*capture{first, cp} {
				ks.AddLines(x.keylog, time.Now())
				out := &collect{}
				c := NewConn(ks, Limits{}, out)
				feed(c, [2][]byte{x.c2s, x.s2c}, 3000, 1)
				c.Close(time.Now())
				checkExact(t, x, c, out)
				if c.Info().Resumed != (x == cp) {
					t.Errorf("resumed %v", c.Info().Resumed)
				}
			}
			c, out := decryptAll(t, cp, 3000, 1)
			if tc.ver == tls.VersionTLS13 {
				checkExact(t, cp, c, out)
			}
			if !c.Info().Resumed {
				t.Error("not reported resumed")
			}
		})
	}
	t.Run("hello-retry", func(t *testing.T) {
		cp := runSession(t, session{maxVersion: tls.VersionTLS13, curves: []tls.CurveID{tls.X25519, tls.CurveP384}, srvCurves: []tls.CurveID{tls.CurveP384}, c2s: sizes, s2c: sizes})
		c, out := decryptAll(t, cp, 1460, 2)
		checkExact(t, cp, c, out)
		if !c.Info().HelloRetry {
			t.Error("no HelloRetryRequest seen")
		}
	})
}
