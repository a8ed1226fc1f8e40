// Package tlstest makes throwaway X.509 certificates for tests: a
// self-signed certificate for a TLS server, which is also a CA that issues
// server and client certificates, as a tls.Certificate, as PEM files and
// as a pool that trusts it. It is test kit: no binary links it.
package tlstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Cert is a certificate and its private key.
type Cert struct {
	// TLS is the certificate (Leaf set) and key, for tls.Config.Certificates.
	TLS tls.Certificate
}

// SelfSigned returns a self-signed ECDSA P-256 certificate valid for
// hosts (each an IP address or a DNS name; the first is also the subject's
// common name), for server and client authentication, from an hour ago for
// a day. It is its own CA: Pool trusts it, Issue signs with it.
func SelfSigned(t testing.TB, hosts ...string) *Cert {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return create(t, k, nil, hosts)
}

// SelfSignedRSA is SelfSigned with an RSA 2048 key, for the cipher suites
// that need one (TLS 1.2 RSA key exchange, ECDHE_RSA).
func SelfSignedRSA(t testing.TB, hosts ...string) *Cert {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return create(t, k, nil, hosts)
}

// Issue returns a new ECDSA P-256 certificate valid for hosts (as in
// SelfSigned; none for a client certificate), signed by c: a server or a
// client that trusts c.Pool() accepts it.
func (c *Cert) Issue(t testing.TB, hosts ...string) *Cert {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return create(t, k, c, hosts)
}

// Pool returns a certificate pool that trusts c and what it issued.
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.TLS.Leaf)
	return p
}

// Files writes the certificate (a PEM "CERTIFICATE" block) and its key (a
// PEM "PRIVATE KEY" block, PKCS #8) to cert.pem and key.pem in a new
// temporary directory of t and returns their paths: what --*-cert and
// --*-key flags take.
func (c *Cert) Files(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	kd, err := x509.MarshalPKCS8PrivateKey(c.TLS.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.TLS.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// create makes the certificate of key for hosts, signed by parent, or
// self-signed (and a CA) if parent is nil.
func create(t testing.TB, key crypto.Signer, parent *Cert, hosts []string) *Cert {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "tapline test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	signer, signerKey := tmpl, any(key)
	if parent != nil {
		signer, signerKey = parent.TLS.Leaf, parent.TLS.PrivateKey
	} else {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}
}
