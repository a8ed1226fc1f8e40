package tlsdec

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/proto/tlstest"
)

// recConn records every byte written through it (one direction of a
// connection's TCP stream).
type recConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (r recConn) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(b)
	r.mu.Unlock()
	return r.Conn.Write(b)
}

// capture is one TLS session between Go's crypto/tls client and server:
// the two byte streams as TCP carried them, the key log, and the
// application data each side wrote.
type capture struct {
	c2s, s2c   []byte
	keylog     []byte
	sentC2S    []byte
	sentS2C    []byte
	version    uint16
	suite      uint16
	serverName string
	alpn       string
	resumed    bool
}

var (
	certOnce       sync.Once
	rsaCert, ecCrt *tlstest.Cert
)

func certs(t testing.TB) {
	certOnce.Do(func() {
		rsaCert, ecCrt = tlstest.SelfSignedRSA(t, "tapline.test"), tlstest.SelfSigned(t, "tapline.test")
	})
}

// session describes one session to run.
type session struct {
	maxVersion uint16
	suites     []uint16
	ec         bool // ECDSA certificate
	cache      tls.ClientSessionCache
	noTickets  bool
	curves     []tls.CurveID // client's, to force a HelloRetryRequest
	srvCurves  []tls.CurveID
	c2s, s2c   []int // sizes of the application writes of each side
}

// runSession runs s over net.Pipe and returns its capture.
func runSession(t testing.TB, s session) *capture {
	t.Helper()
	certs(t)
	cert := rsaCert.TLS
	if s.ec {
		cert = ecCrt.TLS
	}
	var kl bytes.Buffer
	var klMu sync.Mutex
	klw := writerFunc(func(b []byte) (int, error) { klMu.Lock(); defer klMu.Unlock(); return kl.Write(b) })
	a, b := tcpPair(t)
	var mu sync.Mutex
	var c2s, s2c bytes.Buffer
	cc := recConn{a, &mu, &c2s}
	sc := recConn{b, &mu, &s2c}
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: s.maxVersion, CipherSuites: s.suites,
		NextProtos: []string{"http/1.1"}, SessionTicketsDisabled: s.noTickets, CurvePreferences: s.srvCurves}
	cliCfg := &tls.Config{InsecureSkipVerify: true, ServerName: "tapline.test", MaxVersion: s.maxVersion, CipherSuites: s.suites,
		KeyLogWriter: klw, ClientSessionCache: s.cache, NextProtos: []string{"http/1.1"}, CurvePreferences: s.curves}
	srvCfg.SetSessionTicketKeys([][32]byte{{1, 2, 3}}) // resumption across sessions
	cap := &capture{}
	var sent [2]bytes.Buffer
	mk := func(n int) []byte { p := make([]byte, n); rand.Read(p); return p }
	var wg sync.WaitGroup
	wg.Add(2)
	errs := make(chan error, 4)
	go func() {
		defer wg.Done()
		srv := tls.Server(sc, srvCfg)
		defer srv.Close()
		if err := srv.Handshake(); err != nil {
			errs <- err
			sc.Close()
			return
		}
		rd := make(chan struct{})
		want := 0
		for _, n := range s.c2s {
			want += n
		}
		go func() { io.CopyN(io.Discard, srv, int64(want)); close(rd) }()
		for _, n := range s.s2c {
			p := mk(n)
			sent[1].Write(p)
			if _, err := srv.Write(p); err != nil {
				errs <- err
				return
			}
		}
		<-rd
	}()
	go func() {
		defer wg.Done()
		cli := tls.Client(cc, cliCfg)
		if err := cli.Handshake(); err != nil {
			errs <- err
			cli.Close()
			return
		}
		st := cli.ConnectionState()
		cap.version, cap.suite, cap.alpn, cap.resumed = st.Version, st.CipherSuite, st.NegotiatedProtocol, st.DidResume
		done := make(chan struct{})
		total := 0
		for _, n := range s.s2c {
			total += n
		}
		go func() { io.CopyN(io.Discard, cli, int64(total)); close(done) }()
		for _, n := range s.c2s {
			p := mk(n)
			sent[0].Write(p)
			if _, err := cli.Write(p); err != nil {
				errs <- err
				return
			}
		}
		<-done
		cli.Close()
	}()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	mu.Lock()
	cap.c2s, cap.s2c = bytes.Clone(c2s.Bytes()), bytes.Clone(s2c.Bytes())
	mu.Unlock()
	cap.keylog = bytes.Clone(kl.Bytes())
	cap.sentC2S, cap.sentS2C = sent[0].Bytes(), sent[1].Bytes()
	cap.serverName = "tapline.test"
	return cap
}

// tcpPair is a loopback TCP connection (kernel buffers: both sides may
// write at once, as after a HelloRetryRequest).
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// collect is a Sink that records plaintext and losses.
type collect struct {
	data [2]bytes.Buffer
	lost [2]int64
	why  [2][]string
	ops  [2][]string // "d<n>" / "l<n>" in order
}

func (c *collect) Plaintext(dir int, b []byte) { c.data[dir].Write(b) }
func (c *collect) Lost(dir int, n int64, reason string) {
	c.lost[dir] += n
	c.why[dir] = append(c.why[dir], reason)
}

// feed gives the two streams to a Conn interleaved in chunks of
// pseudo-random sizes.
func feed(c *Conn, streams [2][]byte, chunk int, seed int) {
	pos := [2]int{}
	i := seed
	now := time.Now()
	for pos[0] < len(streams[0]) || pos[1] < len(streams[1]) {
		d := i & 1
		if pos[d] >= len(streams[d]) {
			d ^= 1
		}
		n := 1 + (i*7919)%chunk
		if pos[d]+n > len(streams[d]) {
			n = len(streams[d]) - pos[d]
		}
		c.Data(d, streams[d][pos[d]:pos[d]+n], now)
		pos[d] += n
		i++
	}
}
