package stage

import (
	"context"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func newFS(c *Common) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("teststage", flag.ContinueOnError)
	c.Register(fs, ":0")
	own := fs.String("target-url", "", "a stage flag")
	return fs, own
}

func TestParseEnvAndAliases(t *testing.T) {
	var c Common
	fs, own := newFS(&c)
	t.Setenv("NATS_URL", "nats://10.9.9.9:4222")
	t.Setenv("TAPLINE_TARGET_URL", "ws://from-env")
	t.Setenv("TAPLINE_SHARDS", "8")
	if err := Parse(fs, []string{"--shards", "4"}, Aliases); err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "nats://10.9.9.9:4222" || *own != "ws://from-env" {
		t.Errorf("env not applied: nats %q own %q", c.NATSURL, *own)
	}
	if c.Shards != 4 {
		t.Errorf("command line must win over env: shards %d", c.Shards)
	}
	// TAPLINE_NATS_URL wins over the NATS_URL alias.
	var c2 Common
	fs2, _ := newFS(&c2)
	t.Setenv("TAPLINE_NATS_URL", "nats://primary:4222")
	if err := Parse(fs2, nil, Aliases); err != nil || c2.NATSURL != "nats://primary:4222" {
		t.Errorf("TAPLINE_NATS_URL: %q %v", c2.NATSURL, err)
	}
}

func TestParseErrors(t *testing.T) {
	var c Common
	fs, _ := newFS(&c)
	t.Setenv("TAPLINE_SHARDS", "many")
	err := Parse(fs, nil, Aliases)
	if err == nil || !strings.Contains(err.Error(), "TAPLINE_SHARDS") {
		t.Errorf("bad env value: %v", err)
	}
	var c2 Common
	fs2, _ := newFS(&c2)
	if err := Parse(fs2, []string{"--no-such-flag"}, Aliases); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestValidate(t *testing.T) {
	var c Common
	fs, _ := newFS(&c)
	if err := Parse(fs, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	bad := c
	bad.Shards = 0
	if bad.Validate() == nil {
		t.Error("0 shards accepted")
	}
	bad = c
	bad.NATSTLSCert = "x.pem"
	if bad.Validate() == nil {
		t.Error("cert without key accepted")
	}
	bad = c
	bad.LogLevel = "loud"
	if bad.Validate() == nil {
		t.Error("bad log level accepted")
	}
}

func TestMainCodeExitCodes(t *testing.T) {
	run := func(args []string, runErr error) int {
		var c Common
		fs, _ := newFS(&c)
		return MainCode(fs, &c, append([]string{"--http", ""}, args...), nil, func(context.Context, Deps) error { return runErr })
	}
	if code := run([]string{"--help"}, nil); code != 0 {
		t.Errorf("--help exit %d", code)
	}
	if code := run([]string{"--shards", "0"}, nil); code != 2 {
		t.Errorf("bad config exit %d", code)
	}
	if code := run(nil, nil); code != 0 {
		t.Errorf("clean run exit %d", code)
	}
	if code := run(nil, io.ErrUnexpectedEOF); code != 1 {
		t.Errorf("failed run exit %d", code)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	var h Health
	srv := httptest.NewServer(Mux(&h, NewRegistry()))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("empty health: %d", code)
	}
	h.Add("nats", func() error { return io.EOF })
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "nats") {
		t.Errorf("failing health: %d %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics: %d", code)
	}
}

func TestServeHTTPStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	d, _ := TestDeps("x")
	if err := ServeHTTP(ctx, "127.0.0.1:0", Mux(&Health{}, NewRegistry()), d.Log); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := ServeHTTP(context.Background(), "256.0.0.1:1", nil, d.Log); err == nil {
		t.Error("bad address accepted")
	}
}

func TestRedact(t *testing.T) {
	got := redact("nats://user:secret@host:4222,nats://other:4222")
	if strings.Contains(got, "secret") || !strings.Contains(got, "other:4222") {
		t.Errorf("redact: %s", got)
	}
}

func TestMetricSum(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_packets_total"}, []string{"vni", "dir"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "t_lag_seconds"})
	reg.MustRegister(c, h)
	c.WithLabelValues("1", "c2s").Add(3)
	c.WithLabelValues("1", "s2c").Add(4)
	c.WithLabelValues("2", "c2s").Add(5)
	h.Observe(1)
	h.Observe(2)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"t_packets_total", nil, 12},
		{"t_packets_total", []string{"vni", "1"}, 7},
		{"t_packets_total", []string{"vni", "1", "dir", "c2s"}, 3},
		{"t_packets_total", []string{"vni", "9"}, 0},
		{"t_lag_seconds", nil, 2},
		{"t_missing", nil, 0},
	} {
		got, err := MetricSum(reg, tc.name, tc.labels...)
		if err != nil || got != tc.want {
			t.Errorf("MetricSum(%s, %v) = %v, %v; want %v", tc.name, tc.labels, got, err, tc.want)
		}
	}
}

// TestSetArgs: a tool that declares positional arguments gets them; one
// more than declared is rejected by name.
func TestSetArgs(t *testing.T) {
	var c Common
	fs, _ := newFS(&c)
	SetArgs(fs, 1)
	if err := Parse(fs, []string{"--shards", "4", "FILE"}, nil); err != nil || fs.Arg(0) != "FILE" {
		t.Fatalf("one declared argument: %v, args %v", err, fs.Args())
	}
	if err := Parse(fs, []string{"FILE", "extra"}, nil); err == nil || !strings.Contains(err.Error(), `"extra"`) {
		t.Fatalf("two arguments with one declared: %v", err)
	}
}

// TestStartingUnhealthyUntilChecked: a stage is not healthy before its run
// function registered what healthy means.
func TestStartingUnhealthyUntilChecked(t *testing.T) {
	h := Starting()
	if f := h.Check(); f["start"] == "" {
		t.Fatalf("a stage with no check yet is healthy: %v", f)
	}
	h.Add("nats", func() error { return nil })
	if f := h.Check(); len(f) != 0 {
		t.Fatalf("healthy checks fail: %v", f)
	}
}

// TestExpectUnhealthyUntilEveryCheck: a check a stage declared it will
// register fails until it is, though another one already passes.
func TestExpectUnhealthyUntilEveryCheck(t *testing.T) {
	h := Starting()
	h.Expect("nats", "streams")
	h.Add("nats", func() error { return nil })
	if f := h.Check(); f["streams"] == "" || len(f) != 1 {
		t.Fatalf("healthy, or failing for another reason, before the streams check is registered: %v", f)
	}
	h.Add("streams", func() error { return nil })
	if f := h.Check(); len(f) != 0 {
		t.Fatalf("every check passes, yet: %v", f)
	}
}
