package replay

import (
	"flag"
	"strings"
	"testing"
)

func parseConfig(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	var c Config
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	c.Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &c, c.Validate()
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" = valid
	}{
		{[]string{"--target", "ws://h:1"}, ""},
		{[]string{"--target", "wss://h:1", "--target", "tcp://h:2"}, ""},
		{[]string{"--listen", ":9001=10.0.0.1:443", "--listen", "127.0.0.1:9002=/feed"}, ""},
		{nil, "give --target"},
		{[]string{"--target", "http://h:1"}, "scheme must be ws, wss or tcp"},
		{[]string{"--target", "ws://h:1", "--target", "ws://h:2"}, "only one ws"},
		{[]string{"--target", "tcp://h"}, "host:port"},
		{[]string{"--target", "ws://h:1", "--listen", ":1=/x"}, "exclusive"},
		{[]string{"--listen", "9001"}, "addr=upstream"},
		{[]string{"--target", "ws://h:1", "--dir", "up"}, "--dir"},
		{[]string{"--target", "ws://h:1", "--incomplete", "maybe"}, "--incomplete"},
		{[]string{"--target", "ws://h:1", "--pace", "slow"}, "--pace"},
		{[]string{"--target", "ws://h:1", "--speed", "0"}, "--speed"},
		{[]string{"--target", "ws://h:1", "--compression", "max"}, "--compression"},
		{[]string{"--target", "ws://h:1", "--set-header", "nocolon"}, "--set-header"},
		{[]string{"--target", "ws://h:1", "--ignore-regex", "("}, "--ignore-regex"},
		{[]string{"--target", "ws://h:1", "--vni", "x"}, "--vni"},
		{[]string{"--target", "ws://h:1", "--match-path", "["}, "--match-path"},
		{[]string{"--target", "ws://h:1", "--durable", "a.b"}, "--durable"},
		{[]string{"--target", "ws://h:1", "--pull-max-bytes", "10"}, "--pull-max-bytes"},
		{[]string{"--target", "ws://h:1", "--results", "some"}, "--results"},
	} {
		_, err := parseConfig(t, tc.args...)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: unexpected error %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.err)
		}
	}
	c, _ := parseConfig(t, "--listen", ":1=/x")
	if c.Dir != "s2c" {
		t.Errorf("listen mode default --dir %q, want s2c", c.Dir)
	}
}

func TestHandshake(t *testing.T) {
	c, err := parseConfig(t, "--target", "ws://test:8080/base", "--drop-header", "cookie",
		"--set-header", "Authorization: Bearer test", "--set-header", "Host: api.test")
	if err != nil {
		t.Fatal(err)
	}
	open := openEvent("/v1/stream?x=1", "chat.v2", map[string]string{
		"Cookie": "prod", "Authorization": "Bearer prod", "Origin": "https://prod", "Sec-WebSocket-Key": "k", "X-Custom": "1"})
	u, h, host, subs := c.handshake(open)
	if u != "ws://test:8080/v1/stream?x=1" || host != "api.test" || len(subs) != 1 || subs[0] != "chat.v2" {
		t.Fatalf("url %s host %s subs %v", u, host, subs)
	}
	if h.Get("Cookie") != "" || h.Get("Authorization") != "Bearer test" || h.Get("Origin") != "https://prod" ||
		h.Get("Sec-Websocket-Key") != "" || h.Get("X-Custom") != "1" || h.Get("Host") != "" {
		t.Fatalf("headers %v", h)
	}
	// Production credentials stay behind unless asked for.
	c3, _ := parseConfig(t, "--target", "ws://test:8080")
	if _, h3, _, _ := c3.handshake(open); h3.Get("Cookie") != "" || h3.Get("Authorization") != "" || h3.Get("X-Custom") != "1" {
		t.Fatalf("default forwarded credentials: %v", h3)
	}
	// API keys in headers of their own are credentials too.
	keyed := openEvent("/", "", map[string]string{"X-Api-Key": "prod-key", "X-Auth-Token": "prod-tok", "X-Custom": "1"})
	if _, h5, _, _ := c3.handshake(keyed); h5.Get("X-Api-Key") != "" || h5.Get("X-Auth-Token") != "" || h5.Get("X-Custom") != "1" {
		t.Fatalf("default forwarded API-key headers: %v", h5)
	}
	if _, h6, _, _ := c4ForKeys(t).handshake(keyed); h6.Get("X-Api-Key") != "prod-key" {
		t.Fatalf("--forward-credentials did not forward X-Api-Key: %v", h6)
	}
	c4, _ := parseConfig(t, "--target", "ws://test:8080", "--forward-credentials")
	if _, h4, _, _ := c4.handshake(open); h4.Get("Cookie") != "prod" || h4.Get("Authorization") != "Bearer prod" {
		t.Fatalf("--forward-credentials: %v", h4)
	}
	// A token in the query stays behind the same way.
	tok := openEvent("/feed?symbol=BTC&access_token=prod-tok", "", nil)
	if u, _, _, _ := c3.handshake(tok); u != "ws://test:8080/feed?symbol=BTC" {
		t.Fatalf("default forwarded a query token: %s", u)
	}
	if u, _, _, _ := c4ForKeys(t).handshake(tok); u != "ws://test:8080/feed?symbol=BTC&access_token=prod-tok" {
		t.Fatalf("--forward-credentials dropped the query token: %s", u)
	}
	c2, _ := parseConfig(t, "--target", "ws://test:8080", "--path", "/other", "--subprotocol", "-", "--forward-headers=false")
	u, h, _, subs = c2.handshake(open)
	if u != "ws://test:8080/other" || len(subs) != 0 || len(h) != 0 {
		t.Fatalf("overrides: %s %v %v", u, subs, h)
	}
}

func c4ForKeys(t *testing.T) *Config {
	c, err := parseConfig(t, "--target", "ws://test:8080", "--forward-credentials")
	if err != nil {
		t.Fatal(err)
	}
	return c
}
