package stage

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"strings"
	"testing"
)

func TestEnvNameDotsAndDashes(t *testing.T) {
	for in, want := range map[string]string{
		"nats-url":                "TAPLINE_NATS_URL",
		"decap.listen":            "TAPLINE_DECAP_LISTEN",
		"reassemble.max-buffered": "TAPLINE_REASSEMBLE_MAX_BUFFERED",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHealthcheckCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := &Health{}
	d, reg := TestDeps("hc")
	if err := ServeHTTP(ctx, addr, Mux(h, reg), d.Log); err != nil {
		t.Fatal(err)
	}
	port := addr[strings.LastIndex(addr, ":"):]

	run := func(args ...string) (int, string) {
		var c Common
		fs := flag.NewFlagSet("hc", flag.ContinueOnError)
		c.Register(fs, ":1")
		var stderr bytes.Buffer
		return healthcheckCode(fs, &c, args, &stderr), stderr.String()
	}
	if code, out := run("--http", port); code != 0 {
		t.Fatalf("healthy stage: code %d, %s", code, out)
	}
	t.Setenv("TAPLINE_HTTP", addr)
	if code, out := run(); code != 0 {
		t.Fatalf("healthy stage via TAPLINE_HTTP: code %d, %s", code, out)
	}
	h.Add("nats", func() error { return errors.New("not connected") })
	code, out := run()
	if code != 1 || !strings.Contains(out, "503") || !strings.Contains(out, "nats") {
		t.Fatalf("failing check: code %d, %q", code, out)
	}
	cancel()
	if code, _ := run("--http", ""); code != 1 {
		t.Fatalf("empty --http: code %d", code)
	}
}
