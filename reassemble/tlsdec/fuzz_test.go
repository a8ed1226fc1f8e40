package tlsdec

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzKeyLogLine: any line parses or is refused, never panics; a parsed
// line has a 32-byte random and a secret of a TLS length.
func FuzzKeyLogLine(f *testing.F) {
	f.Add([]byte("CLIENT_RANDOM 0000000000000000000000000000000000000000000000000000000000000000 000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\n"))
	f.Add([]byte("# comment"))
	f.Add([]byte("SERVER_TRAFFIC_SECRET_0 ab 00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKeyLogLine(b)
		if err == nil && len(k.Secret) != 32 && len(k.Secret) != 48 {
			t.Fatalf("secret of %d bytes accepted", len(k.Secret))
		}
		NewKeyStore(4, time.Minute).AddLines(b, time.Now())
	})
}

// FuzzHello: the hello parsers never panic.
func FuzzHello(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseClientHello(b)
		ParseServerHello(b)
		parseEE(b)
		LooksLikeClientHello(b)
	})
}

// FuzzRecords: arbitrary client and server streams (split at a byte of
// the input) through a Conn with and without keys and with a gap: no
// panic, the held bytes stay bounded, nothing unauthenticated is passed
// on (without keys, no plaintext at all).
func FuzzRecords(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 3 {
			return
		}
		split := int(b[0]) << 8 % len(b)
		gapAt := int(b[1]) % len(b)
		s := [2][]byte{b[2:max(split, 2)], b[max(split, 2):]}
		ks := NewKeyStore(4, 0)
		out := &collect{}
		c := NewConn(ks, Limits{HoldBytes: 1 << 16, HoldTime: time.Second}, out)
		now := time.Now()
		for d := 0; d < 2; d++ {
			p := s[d]
			if gapAt < len(p) {
				c.Data(d, p[:gapAt], now)
				c.Gap(d, int64(b[1])+1, now)
				p = p[gapAt:]
			}
			c.Data(d, p, now)
		}
		if c.Memory() > 1<<16+4*maxCiphertext+maxHandshake {
			t.Fatalf("memory %d", c.Memory())
		}
		c.Poll(now.Add(2 * time.Second))
		c.Close(now)
		if out.data[0].Len()+out.data[1].Len() > 0 {
			t.Fatal("plaintext without keys")
		}
	})
}

// TestWriteFuzzSeeds (re)writes the seed corpora from a real session when
// TAPLINE_WRITE_SEEDS is set.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("TAPLINE_WRITE_SEEDS") == "" {
		t.Skip("set TAPLINE_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	for i, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cp := runSession(t, session{maxVersion: v, c2s: []int{300}, s2c: []int{2000}})
		// hello: the ClientHello and ServerHello bodies
		ch := cp.c2s[5+4 : 5+hdrLen(cp.c2s)]
		sh := cp.s2c[5+4 : 5+hdrLen(cp.s2c)]
		writeSeed(t, "FuzzHello", i*2, ch)
		writeSeed(t, "FuzzHello", i*2+1, sh)
		in := append([]byte{byte(len(cp.c2s) >> 8), 7}, cp.c2s...)
		in = append(in, cp.s2c...)
		writeSeed(t, "FuzzRecords", i, in)
		writeSeed(t, "FuzzKeyLogLine", i, cp.keylog)
	}
}

func writeSeed(t *testing.T, fuzz string, i int, b []byte) {
	dir := filepath.Join("testdata", "fuzz", fuzz)
	os.MkdirAll(dir, 0o755)
	body := "go test fuzz v1\n[]byte(" + quote(b) + ")\n"
	if err := os.WriteFile(filepath.Join(dir, "seed"+string(rune('0'+i))), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func quote(b []byte) string {
	const hexd = "0123456789abcdef"
	out := []byte{'"'}
	for _, c := range b {
		out = append(out, '\\', 'x', hexd[c>>4], hexd[c&15])
	}
	return string(append(out, '"'))
}

// FuzzMidStreamRecords: any bytes give an answer without a panic, and a
// final answer is never "more".
func FuzzMidStreamRecords(f *testing.F) {
	f.Add([]byte{23, 3, 3, 0, 2, 1, 2, 23, 3, 3, 0, 1, 9, 23, 3, 3, 0, 1, 7}, true)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), true)
	f.Add([]byte{0x82, 0x7e, 0x10, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, any bool) {
		yes, more := MidStreamRecords(b, any, true)
		if more {
			t.Fatal("final decision undecided")
		}
		if y, _ := MidStreamRecords(b, any, false); y && !yes {
			t.Fatal("a chain found without final is not found with it")
		}
	})
}
