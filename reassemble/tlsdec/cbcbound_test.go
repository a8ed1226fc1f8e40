package tlsdec

import (
	"bytes"
	"crypto/tls"
	"testing"
	"time"
)

// TestCBCLossRange: TLS 1.2 AES-CBC records lost in a gap (one inside a
// record, whole records found again by authentication): the plaintext
// really lost lies within [LostBytesMin, LostBytes], the reported range,
// and the rest is exact around one hole. LostBytes alone (the estimate
// passed to the decoder) is above the truth: Go pads minimally, so each
// lost record's plaintext is up to 15 bytes shorter than estimated.
func TestCBCLossRange(t *testing.T) {
	for _, suite := range []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256} {
		cp := runSession(t, session{maxVersion: tls.VersionTLS12, suites: []uint16{suite}, c2s: []int{1000}, s2c: []int{300000, 777, 5001}})
		recs := recordStarts(cp.s2c)
		if len(recs) < 20 {
			t.Fatalf("%d records", len(recs))
		}
		r := recs[len(recs)/2]
		for _, g := range []struct {
			name   string
			off, n int
		}{
			{"inside-body", r + 100, 1000},
			{"whole-record", r, recs[len(recs)/2+1] - r},
			{"three-records", r + 3, recs[len(recs)/2+3] - r},
		} {
			t.Run(tls.CipherSuiteName(suite)+"/"+g.name, func(t *testing.T) {
				ks := NewKeyStore(10, 0)
				ks.AddLines(cp.keylog, time.Now())
				out := &collect{}
				c := NewConn(ks, Limits{}, out)
				feedGap(c, [2][]byte{cp.c2s, cp.s2c}, 1, g.off, g.n, time.Now())
				c.Close(time.Now())
				st := c.Stats(1)
				got, want := out.data[1].Bytes(), cp.sentS2C
				truth := int64(len(want) - len(got))
				if truth <= 0 || st.LostBytes != out.lost[1] {
					t.Fatalf("truth %d, stats %+v, reported %d", truth, st, out.lost[1])
				}
				if truth < st.LostBytesMin || truth > st.LostBytes {
					t.Fatalf("%d bytes really lost, reported range [%d, %d]", truth, st.LostBytesMin, st.LostBytes)
				}
				t.Logf("really lost %d, reported [%d, %d]", truth, st.LostBytesMin, st.LostBytes)
				p := 0
				for p < len(got) && got[p] == want[p] {
					p++
				}
				if !bytes.Equal(got[p:], want[int64(p)+truth:]) {
					t.Fatalf("after the hole at %d the plaintext differs", p)
				}
			})
		}
	}
}
