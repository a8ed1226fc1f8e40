package tlsdec

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"
	"time"
)

func decryptAll(t *testing.T, cp *capture, chunk, seed int) (*Conn, *collect) {
	t.Helper()
	ks := NewKeyStore(1000, time.Hour)
	if _, bad := ks.AddLines(cp.keylog, time.Now()); bad != 0 {
		t.Fatalf("%d bad key log lines", bad)
	}
	out := &collect{}
	c := NewConn(ks, Limits{}, out)
	feed(c, [2][]byte{cp.c2s, cp.s2c}, chunk, seed)
	c.Close(time.Now())
	return c, out
}

func checkExact(t *testing.T, cp *capture, c *Conn, out *collect) {
	t.Helper()
	if c.Failed() != "" || c.Undecryptable() {
		t.Fatalf("failed %q undecryptable %v", c.Failed(), c.Undecryptable())
	}
	if !bytes.Equal(out.data[0].Bytes(), cp.sentC2S) {
		t.Errorf("c2s plaintext: got %d bytes, want %d", out.data[0].Len(), len(cp.sentC2S))
	}
	if !bytes.Equal(out.data[1].Bytes(), cp.sentS2C) {
		t.Errorf("s2c plaintext: got %d bytes, want %d", out.data[1].Len(), len(cp.sentS2C))
	}
	for d := 0; d < 2; d++ {
		if out.lost[d] != 0 {
			t.Errorf("dir %d: %d bytes reported lost (%v)", d, out.lost[d], out.why[d])
		}
		st := c.Stats(d)
		if st.RecordsLost != 0 || st.RecordsUndecryptable != 0 {
			t.Errorf("dir %d: stats %+v", d, st)
		}
	}
	info := c.Info()
	if info.Version != cp.version || info.CipherSuite != cp.suite {
		t.Errorf("info %+v, want version %x suite %x", info, cp.version, cp.suite)
	}
	if info.ServerName != "tapline.test" || info.ALPN != "http/1.1" {
		t.Errorf("info SNI %q ALPN %q", info.ServerName, info.ALPN)
	}
}

var sizes = []int{1, 100, 16384, 70000, 5, 300000}

// TestGoSuites decrypts a Go crypto/tls session for every version and
// suite Go offers that the decryptor supports.
func TestGoSuites(t *testing.T) {
	cases := []struct {
		ver   uint16
		suite uint16
		ec    bool
	}{
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, false},
		{tls.VersionTLS13, tls.TLS_AES_256_GCM_SHA384, false},
		{tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
		{tls.VersionTLS12, tls.TLS_RSA_WITH_AES_128_GCM_SHA256, false},
		{tls.VersionTLS12, tls.TLS_RSA_WITH_AES_256_GCM_SHA384, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, false},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, true},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, false},
		{tls.VersionTLS12, tls.TLS_RSA_WITH_AES_128_CBC_SHA, false},
		{tls.VersionTLS12, tls.TLS_RSA_WITH_AES_128_CBC_SHA256, false},
	}
	for _, tc := range cases {
		t.Run(SuiteName(tc.suite), func(t *testing.T) {
			if tc.ver == tls.VersionTLS13 {
				// Go has no knob for TLS 1.3 suites: retry until the
				// wanted one is picked (the client's order is by AES
				// hardware support; the server takes the client's).
				t.Setenv("GODEBUG", "")
			}
			var cp *capture
			for i := 0; i < 1; i++ {
				cp = runSession(t, session{maxVersion: tc.ver, suites: []uint16{tc.suite}, ec: tc.ec, c2s: sizes, s2c: sizes})
			}
			if tc.ver == tls.VersionTLS12 && cp.suite != tc.suite {
				t.Fatalf("negotiated %s", SuiteName(cp.suite))
			}
			for _, chunk := range []int{1 << 20, 1460, 7} {
				c, out := decryptAll(t, cp, chunk, chunk)
				checkExact(t, cp, c, out)
			}
			t.Logf("%s %s: %d/%d bytes", VersionName(cp.version), SuiteName(cp.suite), len(cp.c2s), len(cp.s2c))
		})
	}
}

func TestKeyStoreBounds(t *testing.T) {
	ks := NewKeyStore(3, time.Minute)
	now := time.Now()
	for i := 0; i < 5; i++ {
		ks.AddLines([]byte(fmt.Sprintf("CLIENT_RANDOM %064x %096x\n", i, i)), now)
	}
	if ks.Len() != 3 {
		t.Fatalf("len %d", ks.Len())
	}
	var cr [32]byte
	cr[31] = 0
	if _, ok := ks.Get(cr, now); ok {
		t.Fatal("oldest kept")
	}
	cr[31] = 4
	if _, ok := ks.Get(cr, now); !ok {
		t.Fatal("newest missing")
	}
	if _, ok := ks.Get(cr, now.Add(2*time.Minute)); ok {
		t.Fatal("expired entry returned")
	}
	_, bad := ks.AddLines([]byte("CLIENT_RANDOM zz 00\n# comment\n\nFOO 00 00\nCLIENT_RANDOM "+fmt.Sprintf("%064x", 1)+" 0011\n"), now)
	if bad != 3 {
		t.Fatalf("bad %d", bad)
	}
}
