package tlsdec

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// recRW records both directions at the client's socket.
type recRW struct {
	net.Conn
	mu      sync.Mutex
	in, out bytes.Buffer
}

func (r *recRW) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.mu.Lock()
	r.in.Write(b[:n])
	r.mu.Unlock()
	return n, err
}

func (r *recRW) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(b)
	r.mu.Unlock()
	return r.Conn.Write(b)
}

func writePEM(t *testing.T) (string, string) {
	certs(t)
	return ecCrt.Files(t)
}

// TestOpenSSLKeyUpdate: Go's crypto/tls client against `openssl
// s_server` for each TLS 1.3 suite, the server sending KeyUpdate with
// update_requested (its `K` command) between data, many times: the
// client answers each with its own KeyUpdate, so both directions
// change keys repeatedly. Every byte of both directions decrypts.
func TestOpenSSLKeyUpdate(t *testing.T) {
	const rounds = 6
	for _, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			cert, key := writePEM(t)
			_, port, stdin := startOpenSSLServer(t, cert, key, 1, "-tls1_3", "-ciphersuites", suite)
			raw, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			rec := &recRW{Conn: raw}
			var kl bytes.Buffer
			cli := tls.Client(rec, &tls.Config{InsecureSkipVerify: true, ServerName: "tapline.test", MinVersion: tls.VersionTLS13, KeyLogWriter: &kl})
			if err := cli.Handshake(); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			var gmu sync.Mutex
			go func() {
				b := make([]byte, 32<<10)
				for {
					n, err := cli.Read(b)
					gmu.Lock()
					got.Write(b[:n])
					gmu.Unlock()
					if err != nil {
						return
					}
				}
			}()
			var sentS2C, sentC2S bytes.Buffer
			waitGot := func(n int) {
				deadline := time.Now().Add(20 * time.Second)
				for {
					gmu.Lock()
					l := got.Len()
					gmu.Unlock()
					if l >= n {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("client got %d of %d bytes", l, n)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			for i := 0; i < rounds; i++ {
				line := fmt.Sprintf("server %d %x\n", i, randBytes(3000))
				sentS2C.WriteString(line)
				io.WriteString(stdin, line)
				waitGot(sentS2C.Len())
				io.WriteString(stdin, "K\n")
				time.Sleep(150 * time.Millisecond) // s_server reads stdin lines one read at a time
				p := randBytes(20000)
				sentC2S.Write(p)
				if _, err := cli.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(200 * time.Millisecond)
			cli.Close()
			time.Sleep(100 * time.Millisecond)
			rec.mu.Lock()
			cp := &capture{c2s: bytes.Clone(rec.out.Bytes()), s2c: bytes.Clone(rec.in.Bytes()), keylog: kl.Bytes(),
				sentC2S: sentC2S.Bytes(), sentS2C: sentS2C.Bytes(), version: tls.VersionTLS13, suite: cli.ConnectionState().CipherSuite}
			rec.mu.Unlock()
			if SuiteName(cp.suite) != suite {
				t.Fatalf("negotiated %s", SuiteName(cp.suite))
			}
			for _, chunk := range []int{1 << 20, 1000} {
				ks := NewKeyStore(10, 0)
				ks.AddLines(cp.keylog, time.Now())
				out := &collect{}
				c := NewConn(ks, Limits{}, out)
				feed(c, [2][]byte{cp.c2s, cp.s2c}, chunk, 3)
				c.Close(time.Now())
				if c.Undecryptable() || !bytes.Equal(out.data[0].Bytes(), cp.sentC2S) || !bytes.Equal(out.data[1].Bytes(), cp.sentS2C) {
					t.Fatalf("undecryptable %v, c2s %d/%d s2c %d/%d bytes, stats %+v %+v", c.Undecryptable(),
						out.data[0].Len(), len(cp.sentC2S), out.data[1].Len(), len(cp.sentS2C), c.Stats(0), c.Stats(1))
				}
				if c.h[0].gen < rounds || c.h[1].gen < rounds {
					t.Errorf("key generations c2s %d s2c %d, want >= %d", c.h[0].gen, c.h[1].gen, rounds)
				}
			}
			// A KeyUpdate record lost (the server's: the third record of
			// 27 bytes, a 5-byte handshake message under AEAD): the next
			// records are found under the next key generation; every
			// application byte still arrives.
			recs := recordStarts(cp.s2c)
			var ku []int
			for _, r := range recs[4:] {
				if hdrLen(cp.s2c[r:]) == 22 {
					ku = append(ku, r)
				}
			}
			if len(ku) < 3 {
				t.Fatalf("%d KeyUpdate-sized records", len(ku))
			}
			for _, g := range [][2]int{{ku[2], 27}, {ku[2] + 6, 10}} { // the whole record (header lost), part of its body
				ks := NewKeyStore(10, 0)
				ks.AddLines(cp.keylog, time.Now())
				out := &collect{}
				c := NewConn(ks, Limits{}, out)
				feedGap(c, [2][]byte{cp.c2s, cp.s2c}, 1, g[0], g[1], time.Now())
				c.Close(time.Now())
				if !bytes.Equal(out.data[1].Bytes(), cp.sentS2C) || !bytes.Equal(out.data[0].Bytes(), cp.sentC2S) {
					t.Fatalf("after a lost KeyUpdate: s2c %d/%d bytes, stats %+v", out.data[1].Len(), len(cp.sentS2C), c.Stats(1))
				}
				if out.lost[1] != 0 {
					t.Errorf("%d bytes reported lost for a lost KeyUpdate", out.lost[1])
				}
				if st := c.Stats(1); st.RecordsLost != 1 || c.h[1].gen < rounds {
					t.Errorf("stats %+v gen %d", st, c.h[1].gen)
				}
			}
		})
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
