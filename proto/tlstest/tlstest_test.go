package tlstest

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
)

// handshake runs one TLS handshake over loopback between a server with
// srv and a client with cli and returns the client's error and the
// server's.
func handshake(t *testing.T, srv, cli *tls.Config) (cliErr, srvErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvc <- err
			return
		}
		defer c.Close()
		s := tls.Server(c, srv)
		err = s.Handshake()
		if err == nil {
			_, err = io.WriteString(s, "ok")
		}
		srvc <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err == nil {
		var b [2]byte
		_, err = io.ReadFull(c, b[:])
		c.Close()
	}
	return err, <-srvc
}

// TestSelfSignedVerifies: a client trusting Pool verifies the server's
// certificate under each of its host names (IP and DNS), ECDSA and RSA;
// a client trusting another certificate refuses it, and so does one asking
// for a name the certificate does not have.
func TestSelfSignedVerifies(t *testing.T) {
	for name, c := range map[string]*Cert{
		"ecdsa": SelfSigned(t, "127.0.0.1", "feed.test"),
		"rsa":   SelfSignedRSA(t, "127.0.0.1", "feed.test"),
	} {
		srv := &tls.Config{Certificates: []tls.Certificate{c.TLS}}
		for _, sn := range []string{"127.0.0.1", "feed.test"} {
			if err, serr := handshake(t, srv, &tls.Config{RootCAs: c.Pool(), ServerName: sn}); err != nil || serr != nil {
				t.Errorf("%s as %s: client %v, server %v", name, sn, err, serr)
			}
		}
		other := SelfSigned(t, "127.0.0.1", "feed.test")
		if err, _ := handshake(t, srv, &tls.Config{RootCAs: other.Pool(), ServerName: "feed.test"}); err == nil {
			t.Errorf("%s: a client trusting another certificate accepted it", name)
		}
		if err, _ := handshake(t, srv, &tls.Config{RootCAs: c.Pool(), ServerName: "other.test"}); err == nil {
			t.Errorf("%s: accepted for a name it does not have", name)
		}
	}
}

// TestIssueMutualTLS: certificates a CA issued pass mutual TLS between
// peers trusting the CA; a client certificate of another CA is refused by
// the server.
func TestIssueMutualTLS(t *testing.T) {
	ca := SelfSigned(t)
	srvCert, cliCert := ca.Issue(t, "127.0.0.1"), ca.Issue(t)
	srv := &tls.Config{Certificates: []tls.Certificate{srvCert.TLS}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	cli := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cliCert.TLS}}
	if err, serr := handshake(t, srv, cli); err != nil || serr != nil {
		t.Fatalf("client %v, server %v", err, serr)
	}
	stranger := SelfSigned(t).Issue(t)
	cli.Certificates = []tls.Certificate{stranger.TLS}
	if _, serr := handshake(t, srv, cli); serr == nil || !strings.Contains(serr.Error(), "certificate") {
		t.Fatalf("server accepted a client certificate of another CA: %v", serr)
	}
}

// TestFiles: the files Files writes load as the same key pair.
func TestFiles(t *testing.T) {
	for _, c := range []*Cert{SelfSigned(t, "127.0.0.1"), SelfSignedRSA(t), SelfSigned(t).Issue(t)} {
		certFile, keyFile := c.Files(t)
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(kp.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if !leaf.Equal(c.TLS.Leaf) {
			t.Fatal("cert.pem is not the certificate")
		}
	}
}
