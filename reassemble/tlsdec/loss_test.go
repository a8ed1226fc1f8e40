package tlsdec

import (
	"bytes"
	"crypto/tls"
	"testing"
	"time"
)

// feedGap feeds both streams in 1000-byte chunks, with n bytes of dir
// at offset off replaced by a Gap.
func feedGap(c *Conn, s [2][]byte, dir int, off, n int, now time.Time) {
	pos := [2]int{}
	for pos[0] < len(s[0]) || pos[1] < len(s[1]) {
		for d := 0; d < 2; d++ {
			end := min(pos[d]+1000, len(s[d]))
			if d == dir && pos[d] <= off && off < end {
				c.Data(d, s[d][pos[d]:off], now)
				c.Gap(d, int64(n), now)
				pos[d] = off + n
				continue
			}
			if pos[d] < end {
				c.Data(d, s[d][pos[d]:end], now)
				pos[d] = end
			}
		}
	}
}

// checkOneHole checks that got is want with one contiguous range of
// exactly lost bytes removed, and returns where it was.
func checkOneHole(t *testing.T, got, want []byte, lost int64) int {
	t.Helper()
	if int64(len(got))+lost != int64(len(want)) {
		t.Fatalf("got %d bytes + %d lost, want %d", len(got), lost, len(want))
	}
	p := 0
	for p < len(got) && got[p] == want[p] {
		p++
	}
	if !bytes.Equal(got[p:], want[int64(p)+lost:]) {
		t.Fatalf("after the hole at %d (%d bytes) the plaintext differs", p, lost)
	}
	return p
}

// recordStarts returns the stream offsets of the records of a stream.
func recordStarts(b []byte) []int {
	var out []int
	for i := 0; i+5 <= len(b); i += 5 + hdrLen(b[i:]) {
		out = append(out, i)
	}
	return out
}

func TestLossInsideAndAcrossRecords(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ver   uint16
		suite uint16
	}{
		{"tls13-aes128", tls.VersionTLS13, 0},
		{"tls12-ecdhe-aes128gcm", tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		{"tls12-ecdhe-chacha", tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256},
	} {
		var suites []uint16
		if tc.suite != 0 {
			suites = []uint16{tc.suite}
		}
		cp := runSession(t, session{maxVersion: tc.ver, suites: suites, c2s: []int{200000}, s2c: []int{1 << 20}})
		recs := recordStarts(cp.s2c)
		if len(recs) < 40 {
			t.Fatalf("%d records", len(recs))
		}
		r := recs[len(recs)/2]
		next := recs[len(recs)/2+1]
		for _, g := range []struct {
			name      string
			off, n    int
			wantRecs  int64
			resyncing bool
		}{
			{"inside-body", r + 100, 1000, 1, false},
			{"whole-record", r, next - r, 1, true},
			{"header-cut", r + 2, 10, 1, true},
			{"across-boundary", next - 50, 100, 2, true},
			{"five-records", r + 7, recs[len(recs)/2+5] - r, 6, true},
			{"exact-boundary-multi", r, recs[len(recs)/2+3] - r, 3, true},
		} {
			t.Run(tc.name+"/"+g.name, func(t *testing.T) {
				ks := NewKeyStore(10, 0)
				ks.AddLines(cp.keylog, time.Now())
				out := &collect{}
				c := NewConn(ks, Limits{}, out)
				feedGap(c, [2][]byte{cp.c2s, cp.s2c}, 1, g.off, g.n, time.Now())
				c.Close(time.Now())
				if !bytes.Equal(out.data[0].Bytes(), cp.sentC2S) {
					t.Fatalf("c2s not exact")
				}
				st := c.Stats(1)
				if st.RecordsLost != g.wantRecs || st.RecordsUndecryptable != 0 {
					t.Errorf("stats %+v, want %d lost", st, g.wantRecs)
				}
				if out.lost[1] == 0 {
					t.Fatal("no loss reported")
				}
				checkOneHole(t, out.data[1].Bytes(), cp.sentS2C, out.lost[1])
				if g.resyncing != (st.Resyncs > 0) {
					t.Errorf("resyncs %d", st.Resyncs)
				}
			})
		}
	}
}

func TestKeysLateAndNever(t *testing.T) {
	cp := runSession(t, session{maxVersion: tls.VersionTLS13, c2s: []int{50000}, s2c: []int{300000}})
	now := time.Now()
	t.Run("late", func(t *testing.T) {
		ks := NewKeyStore(10, 0)
		out := &collect{}
		c := NewConn(ks, Limits{HoldTime: 10 * time.Second}, out)
		feedGap(c, [2][]byte{cp.c2s, cp.s2c}, 0, -1, 0, now)
		if out.data[0].Len()+out.data[1].Len() != 0 || !c.Waiting() {
			t.Fatal("plaintext without keys")
		}
		if c.Memory() < int64(len(cp.s2c)) {
			t.Errorf("memory %d below what is held", c.Memory())
		}
		c.Poll(now.Add(time.Second))
		ks.AddLines(cp.keylog, now)
		c.Poll(now.Add(2 * time.Second))
		c.Close(now.Add(2 * time.Second))
		checkExact(t, cp, c, out)
	})
	t.Run("never", func(t *testing.T) {
		ks := NewKeyStore(10, 0)
		out := &collect{}
		c := NewConn(ks, Limits{HoldTime: 10 * time.Second}, out)
		feedGap(c, [2][]byte{cp.c2s, cp.s2c}, 0, -1, 0, now)
		c.Poll(now.Add(11 * time.Second))
		if c.Waiting() {
			t.Fatal("still holding after the hold time")
		}
		ks.AddLines(cp.keylog, now) // too late
		c.Close(now.Add(12 * time.Second))
		if out.data[0].Len()+out.data[1].Len() != 0 {
			t.Fatal("plaintext published without keys")
		}
		if !c.Undecryptable() || c.Stats(1).RecordsUndecryptable == 0 {
			t.Fatalf("not reported undecryptable: %+v", c.Stats(1))
		}
		if out.lost[1] == 0 {
			t.Fatal("no loss reported")
		}
	})
	t.Run("hold-bytes", func(t *testing.T) {
		ks := NewKeyStore(10, 0)
		out := &collect{}
		c := NewConn(ks, Limits{HoldBytes: 100000, HoldTime: time.Minute}, out)
		feedGap(c, [2][]byte{cp.c2s, cp.s2c}, 0, -1, 0, now)
		if c.Memory() > 200000+2*maxCiphertext {
			t.Errorf("memory %d past the hold bound", c.Memory())
		}
		ks.AddLines(cp.keylog, now)
		c.Close(now)
		got := out.data[1].Bytes()
		if len(got) == 0 || !bytes.HasSuffix(cp.sentS2C, got) {
			t.Fatalf("s2c: %d bytes, not the tail of what was sent", len(got))
		}
		if int64(len(got))+out.lost[1] < int64(len(cp.sentS2C)) {
			t.Errorf("got %d + lost %d != %d", len(got), out.lost[1], len(cp.sentS2C))
		}
	})
}

func TestAuthFailureNeverPassed(t *testing.T) {
	cp := runSession(t, session{maxVersion: tls.VersionTLS13, c2s: []int{10}, s2c: []int{100000}})
	recs := recordStarts(cp.s2c)
	bad := bytes.Clone(cp.s2c)
	r := recs[len(recs)-3]
	bad[r+100] ^= 1
	ks := NewKeyStore(10, 0)
	ks.AddLines(cp.keylog, time.Now())
	out := &collect{}
	c := NewConn(ks, Limits{}, out)
	feedGap(c, [2][]byte{cp.c2s, bad}, 0, -1, 0, time.Now())
	c.Close(time.Now())
	if c.Stats(1).RecordsUndecryptable != 1 {
		t.Fatalf("stats %+v", c.Stats(1))
	}
	checkOneHole(t, out.data[1].Bytes(), cp.sentS2C, out.lost[1])
}
