package replay

import (
	"crypto/tls"
	"fmt"
	"net"
)

// Listen mode over TLS: a test client that insists on wss:// (it pins the
// scheme of the production upstream it replaces) connects to a listener
// serving the certificate given with --listen-cert and --listen-key. The
// hub's logic is the same; only its listener is wrapped.

// validateListenTLS loads the listen certificate when one is given.
func (c *Config) validateListenTLS() error {
	c.listenTLS = nil
	if c.ListenCert == "" && c.ListenKey == "" {
		return nil
	}
	if c.ListenCert == "" || c.ListenKey == "" {
		return fmt.Errorf("--listen-cert and --listen-key go together")
	}
	if len(c.Listens) == 0 {
		return fmt.Errorf("--listen-cert: only for listen mode (--listen)")
	}
	cert, err := tls.LoadX509KeyPair(c.ListenCert, c.ListenKey)
	if err != nil {
		return fmt.Errorf("--listen-cert/--listen-key: %v", err)
	}
	c.listenTLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"}, // a WebSocket upgrade is HTTP/1.1
	}
	return nil
}

// listenOn returns the listener of a --listen address: TLS when a
// certificate was given.
func (c *Config) listenOn(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil || c.listenTLS == nil {
		return ln, err
	}
	return tls.NewListener(ln, c.listenTLS), nil
}
