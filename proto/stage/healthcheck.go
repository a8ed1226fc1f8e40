package stage

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// HealthcheckCommand is the sub-command that probes a running stage's own
// /healthz: `<stage> healthcheck [flags]` exits 0 when it answers 200. It is
// what container health checks run, since distroless images have no curl.
// MainCode handles it for every stage.
const HealthcheckCommand = "healthcheck"

// Probe GETs http://<addr>/healthz, where addr is a --http listen address
// (":9101" probes 127.0.0.1:9101), and returns nil on 200 or one line
// saying what failed.
func Probe(ctx context.Context, addr string, timeout time.Duration) error {
	if addr == "" {
		return fmt.Errorf("healthcheck: --http is empty, nothing to probe")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("healthcheck: --http %q: %v", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// healthcheckCode runs the healthcheck sub-command: it parses args (and the
// environment) into fs so --http / TAPLINE_HTTP name the same address the
// stage serves, then probes it. 0 when healthy, 1 otherwise.
func healthcheckCode(fs *flag.FlagSet, c *Common, args []string, stderr io.Writer) int {
	if err := Parse(fs, args, Aliases); err != nil {
		if errors.Is(err, ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	if err := Probe(context.Background(), c.HTTPAddr, 5*time.Second); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	return 0
}
