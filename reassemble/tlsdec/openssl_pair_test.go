package tlsdec

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// opensslPair runs `openssl s_server` and `openssl s_client` through a
// recording TCP relay: what the client wrote (c2s), what the server wrote
// (s2c), and the client's key log. clientIn is what the client sends (its
// stdin), after early (0-RTT, when given a session) if any.
type opensslRun struct {
	serverArgs, clientArgs []string
	clientIn               string
	then                   *opensslRun // a second client of the same server (resumption)
	keylog                 []byte
	c2s, s2c               []byte
}

func opensslPair(t *testing.T, dir string, r opensslRun) (c2s, s2c, keylog []byte) {
	t.Helper()
	runs := []*opensslRun{&r}
	if r.then != nil {
		runs = append(runs, r.then)
	}
	opensslServe(t, dir, r.serverArgs, runs)
	last := runs[len(runs)-1]
	return last.c2s, last.s2c, last.keylog
}

func opensslServe(t *testing.T, dir string, serverArgs []string, runs []*opensslRun) {
	t.Helper()
	cert, key := writePEMRSA(t)
	bin, sport, srvIn := startOpenSSLServer(t, cert, key, len(runs), serverArgs...)
	defer srvIn.Close()
	for i, r := range runs {
		r.c2s, r.s2c, r.keylog = opensslClient(t, bin, filepath.Join(dir, fmt.Sprint(i)), sport, srvIn, r)
	}
}

func opensslClient(t *testing.T, bin, dir string, sport int, srvIn io.Writer, r *opensslRun) (c2s, s2c, keylog []byte) {
	os.MkdirAll(dir, 0o755)
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	var mu sync.Mutex
	var up, down bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a, err := relay.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", sport))
		if err != nil {
			a.Close()
			return
		}
		cp := func(dst, src net.Conn, rec *bytes.Buffer, done chan struct{}) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					mu.Lock()
					rec.Write(buf[:n])
					mu.Unlock()
					dst.Write(buf[:n])
				}
				if err != nil {
					dst.(*net.TCPConn).CloseWrite()
					close(done)
					return
				}
			}
		}
		d1, d2 := make(chan struct{}), make(chan struct{})
		go cp(b, a, &up, d1)
		go cp(a, b, &down, d2)
		<-d1
		<-d2
		a.Close()
		b.Close()
	}()
	kl := filepath.Join(dir, "client.keys")
	cli := exec.Command(bin, append([]string{"s_client", "-connect", relay.Addr().String(), "-keylogfile", kl, "-quiet", "-no_ign_eof"}, r.clientArgs...)...)
	cliIn, _ := cli.StdinPipe()
	cli.Stdout, cli.Stderr = io.Discard, io.Discard
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	io.WriteString(cliIn, r.clientIn)
	time.Sleep(300 * time.Millisecond)
	io.WriteString(srvIn, "hello from the server\n")
	time.Sleep(300 * time.Millisecond)
	cliIn.Close() // -no_ign_eof: a clean shutdown, so the session stays resumable
	exited := make(chan struct{})
	go func() { cli.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cli.Process.Kill()
		<-exited
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	keylog, _ = os.ReadFile(kl)
	return bytes.Clone(up.Bytes()), bytes.Clone(down.Bytes()), keylog
}

func writePEMRSA(t *testing.T) (string, string) {
	certs(t)
	return rsaCert.Files(t)
}

func decryptPair(t *testing.T, c2s, s2c, keylog []byte) (*Conn, *collect) {
	t.Helper()
	ks := NewKeyStore(10, 0)
	if n, bad := ks.AddLines(keylog, time.Now()); n == 0 || bad != 0 {
		t.Fatalf("key log: %d lines, %d bad", n, bad)
	}
	out := &collect{}
	c := NewConn(ks, Limits{}, out)
	feed(c, [2][]byte{c2s, s2c}, 700, 5)
	c.Close(time.Now())
	return c, out
}

// TestOpenSSLCBC: TLS 1.2 AES-CBC with HMAC-SHA1 and HMAC-SHA256 between
// OpenSSL peers, with encrypt-then-MAC (OpenSSL's default) and without
// (-no_etm): both directions' application data decrypt exactly.
func TestOpenSSLCBC(t *testing.T) {
	for _, cipher := range []string{"ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384", "AES128-SHA256"} {
		for _, etm := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/etm=%v", cipher, etm), func(t *testing.T) {
				args := []string{"-tls1_2", "-cipher", cipher}
				if !etm {
					args = append(args, "-no_etm")
				}
				msg := "GET / HTTP/1.1\nline two of the client's data " + strings.Repeat("x", 5000) + "\n"
				c2s, s2c, kl := opensslPair(t, t.TempDir(), opensslRun{serverArgs: args, clientArgs: []string{"-tls1_2", "-cipher", cipher}, clientIn: msg})
				c, out := decryptPair(t, c2s, s2c, kl)
				if c.Undecryptable() || out.data[0].String() != msg || out.data[1].String() != "hello from the server\n" {
					t.Fatalf("undecryptable %v %q; c2s %d bytes (want %d), s2c %q; stats %+v %+v",
						c.Undecryptable(), c.Failed(), out.data[0].Len(), len(msg), out.data[1].String(), c.Stats(0), c.Stats(1))
				}
				if got := c.sh.EncryptThenMAC; got != etm {
					t.Errorf("encrypt-then-MAC negotiated %v", got)
				}
			})
		}
	}
}

// TestOpenSSLEarlyData: a TLS 1.3 resumption with 0-RTT early data
// (s_client -sess_in -early_data, s_server -early_data) decrypts with
// CLIENT_EARLY_TRAFFIC_SECRET: the early data, then the rest.
func TestOpenSSLEarlyData(t *testing.T) {
	dir := t.TempDir()
	sess := filepath.Join(dir, "sess.pem")
	early := filepath.Join(dir, "early.txt")
	earlyMsg := "early data sent in 0-RTT\n"
	os.WriteFile(early, []byte(earlyMsg), 0o600)
	srvArgs := []string{"-tls1_3", "-early_data"}
	// A full handshake that stores a session with early data allowed, then
	// a second client of the same server resuming it with 0-RTT data.
	c2s, s2c, kl := opensslPair(t, dir, opensslRun{serverArgs: srvArgs, clientArgs: []string{"-tls1_3", "-sess_out", sess}, clientIn: "first\n",
		then: &opensslRun{clientArgs: []string{"-tls1_3", "-sess_in", sess, "-early_data", early}, clientIn: "after the handshake\n"}})
	if !bytes.Contains(kl, []byte("CLIENT_EARLY_TRAFFIC_SECRET")) {
		t.Fatalf("no early secret logged:\n%s", kl)
	}
	c, out := decryptPair(t, c2s, s2c, kl)
	if !c.Info().Resumed || !c.Info().EarlyData {
		t.Errorf("info %+v", c.Info())
	}
	if got := out.data[0].String(); got != earlyMsg+"after the handshake\n" || c.Undecryptable() {
		t.Fatalf("c2s %q, undecryptable %v, stats %+v", got, c.Undecryptable(), c.Stats(0))
	}
}

// TestOpenSSLEarlyDataRejected: 0-RTT data a (new) server rejects never
// reached its application: it is decrypted but not passed on.
func TestOpenSSLEarlyDataRejected(t *testing.T) {
	dir := t.TempDir()
	sess := filepath.Join(dir, "sess.pem")
	early := filepath.Join(dir, "early.txt")
	os.WriteFile(early, []byte("early data the server drops\n"), 0o600)
	srvArgs := []string{"-tls1_3", "-early_data"}
	opensslPair(t, dir, opensslRun{serverArgs: srvArgs, clientArgs: []string{"-tls1_3", "-sess_out", sess}, clientIn: "first\n"})
	// Another server process: other ticket keys, the PSK and its early
	// data are rejected.
	c2s, s2c, kl := opensslPair(t, dir, opensslRun{serverArgs: srvArgs, clientArgs: []string{"-tls1_3", "-sess_in", sess, "-early_data", early}, clientIn: "after the handshake\n"})
	if !bytes.Contains(kl, []byte("CLIENT_EARLY_TRAFFIC_SECRET")) {
		t.Fatalf("no early secret logged:\n%s", kl)
	}
	c, out := decryptPair(t, c2s, s2c, kl)
	if c.Info().Resumed {
		t.Error("resumed")
	}
	if got := out.data[0].String(); got != "after the handshake\n" || c.Undecryptable() {
		t.Fatalf("c2s %q, undecryptable %v", got, c.Undecryptable())
	}
}

// TestOpenSSLSessionID: TLS 1.2 session-id resumption (s_server
// -no_ticket): with the resumed connection's CLIENT_RANDOM line left out
// of the key log, its master secret is found by session id from the
// first connection.
func TestOpenSSLSessionID(t *testing.T) {
	dir := t.TempDir()
	sess := filepath.Join(dir, "sess.pem")
	first := &opensslRun{clientArgs: []string{"-tls1_2", "-sess_out", sess}, clientIn: "first\n"}
	second := &opensslRun{clientArgs: []string{"-tls1_2", "-sess_in", sess}, clientIn: "resumed by session id\n"}
	opensslServe(t, dir, []string{"-tls1_2", "-no_ticket", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"}, []*opensslRun{first, second})
	ks := NewKeyStore(10, 0)
	ks.AddLines(first.keylog, time.Now())
	out := &collect{}
	c := NewConn(ks, Limits{}, out)
	feed(c, [2][]byte{first.c2s, first.s2c}, 700, 1)
	c.Close(time.Now())
	if out.data[0].String() != "first\n" {
		t.Fatalf("first: %q", out.data[0].String())
	}
	// The second connection's own key log line is not given.
	out = &collect{}
	c = NewConn(ks, Limits{}, out)
	feed(c, [2][]byte{second.c2s, second.s2c}, 700, 1)
	c.Close(time.Now())
	if !c.Info().Resumed || out.data[0].String() != "resumed by session id\n" || out.data[1].String() != "hello from the server\n" {
		t.Fatalf("resumed %v undecryptable %v: %q / %q", c.Info().Resumed, c.Undecryptable(), out.data[0].String(), out.data[1].String())
	}
}
