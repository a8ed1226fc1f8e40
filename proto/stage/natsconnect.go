package stage

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ConfigError marks err as a configuration error found at run time (a
// NATS URL nothing answers at, a port another process holds): MainCode
// prints its one line and exits 2, as for a bad flag.
func ConfigError(err error) error {
	if err == nil {
		return nil
	}
	return &configError{err}
}

// IsConfigError reports whether err, or an error it wraps, is a ConfigError.
func IsConfigError(err error) bool {
	var ce *configError
	return errors.As(err, &ce)
}

type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// natsSchemes are the URL schemes the NATS client dials.
var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// validateNATSURL checks every comma-separated URL of --nats-url: a scheme
// the client knows (or none: host:port) and a host.
func validateNATSURL(urls string) error {
	for _, raw := range strings.Split(urls, ",") {
		u := strings.TrimSpace(raw)
		if u == "" {
			return fmt.Errorf("--nats-url %q: empty URL in the list", redact(urls))
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		p, err := url.Parse(u)
		if err != nil {
			return fmt.Errorf("--nats-url %q: %v", redact(raw), err)
		}
		if !natsSchemes[p.Scheme] {
			return fmt.Errorf("--nats-url %q: scheme %q is not nats://, tls://, ws:// or wss://", redact(raw), p.Scheme)
		}
		if p.Hostname() == "" {
			return fmt.Errorf("--nats-url %q: no host", redact(raw))
		}
	}
	return nil
}

// causeDialer is the NATS client's dialer, remembering the last dial error:
// the client reports only "no servers available for connection" when every
// server failed, hiding "connection refused" or "no such host".
type causeDialer struct {
	mu   sync.Mutex
	last error
}

// Dial implements nats.CustomDialer.
func (d *causeDialer) Dial(network, address string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 2 * time.Second}).Dial(network, address)
	d.mu.Lock()
	d.last = err
	d.mu.Unlock()
	return c, err
}

// cause returns the dial error behind err when err is the client's
// ErrNoServers, else err.
func (d *causeDialer) cause(err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if errors.Is(err, nats.ErrNoServers) && d.last != nil {
		return d.last
	}
	return err
}

// permanent reports errors that retrying does not fix: the server refused
// our credentials or TLS.
func permanent(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) ||
		strings.Contains(err.Error(), "Authorization Violation") || strings.Contains(err.Error(), "x509:")
}

// NATSCheck is every stage's "nats" health check: it fails while nc is not
// connected, saying in what state it is (reconnecting, closed).
func NATSCheck(nc *nats.Conn) func() error {
	return func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not connected to NATS (%s)", nc.Status())
		}
		return nil
	}
}
