package archive

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/archive/index"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

func runCLI(t *testing.T, args ...string) (stdout []byte, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(archiveBinary(t), args...)
	var eb bytes.Buffer
	cmd.Stderr = &eb
	out, err := cmd.Output()
	code = 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out, eb.String(), code
}

// TestCLI covers archive ls and archive query on a local archive: filters,
// nothing matching, and a corrupt chunk.
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	st, err := store.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	in := synth(20000, t0.UnixNano(), int64(time.Millisecond), 5, 16, 1, 300)
	writeChunks(t, st, in, 32, 1, newParams(32<<10, 512<<10, 1000), 512<<10)
	from, to := t0.Format(time.RFC3339), t0.Add(time.Minute).Format(time.RFC3339)

	out, errs, code := runCLI(t, "ls", "--store", dir, "--from", from, "--to", to, "-l")
	if code != 0 || !strings.Contains(string(out), "vni=5/date=2026-11-25/hour=14/") || !strings.Contains(string(out), "10.1.0.1:443") {
		t.Fatalf("ls: code %d\n%s\n%s", code, out, errs)
	}
	_, errs, code = runCLI(t, "ls", "--store", dir, "--from", "2020-01-01", "--to", "2020-01-02")
	if code != 0 || !strings.Contains(errs, "no chunk") {
		t.Fatalf("ls of an empty range: code %d, %s", code, errs)
	}

	count := func(pred func(k flow.Key) bool) []framebatch.Frame {
		var w []framebatch.Frame
		for _, p := range in {
			k, _ := flow.Parse(p.f.Link, p.f.Data)
			if pred(k) {
				w = append(w, p.f)
			}
		}
		return w
	}
	cases := []struct {
		args []string
		want []framebatch.Frame
	}{
		{[]string{"--host", "10.0.0.3"}, count(func(k flow.Key) bool { return k.Src == netip.MustParseAddr("10.0.0.3") })},
		{[]string{"--port", "40005,40006"}, count(func(k flow.Key) bool { return k.SrcPort == 40005 || k.SrcPort == 40006 })},
		{[]string{"--flow", "tcp:10.1.0.1:443-10.0.0.7:40007"}, count(func(k flow.Key) bool { return k.SrcPort == 40007 })},
		{[]string{"--vni", "5", "--host", "10.1.0.1"}, frames(in)},
	}
	for _, c := range cases {
		args := append([]string{"query", "--store", dir, "--from", from, "--to", t0.Add(time.Hour).Format(time.RFC3339), "--progress", "never"}, c.args...)
		out, errs, code := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%v: code %d: %s", c.args, code, errs)
		}
		sameFrames(t, decodeAll(t, out), c.want)
	}

	// Nothing matches: a clear message naming --chunk-age (why a query
	// right after sending finds nothing), a valid empty capture, exit 1.
	out, errs, code = runCLI(t, "query", "--store", dir, "--from", from, "--to", to, "--host", "192.0.2.1")
	if code != 1 || !strings.Contains(errs, "no packet matches") || !strings.Contains(errs, "--chunk-age") {
		t.Fatalf("empty query: code %d, %s", code, errs)
	}
	if len(decodeAll(t, out)) != 0 {
		t.Fatal("empty query wrote packets")
	}
	tsharkCount(t, out, 0)

	// --out FILE, and a corrupt chunk: the rest is returned, the damage
	// reported, exit status 1.
	keys, _ := st.List(t.Context(), "vni=5/")
	var victim string
	for _, k := range keys {
		if strings.HasSuffix(k, index.ChunkSuffix) {
			victim = k
			break
		}
	}
	p := filepath.Join(dir, filepath.FromSlash(victim))
	b, _ := os.ReadFile(p)
	for i := 100; i < 200; i++ {
		b[i] ^= 0xff
	}
	os.WriteFile(p, b, 0o644)
	outFile := filepath.Join(t.TempDir(), "out.pcapng")
	_, errs, code = runCLI(t, "query", "--store", dir, "--from", from, "--to", t0.Add(time.Hour).Format(time.RFC3339), "--out", outFile)
	if code != 1 || !strings.Contains(errs, "corrupt") || !strings.Contains(errs, victim) {
		t.Fatalf("corrupt chunk: code %d, %s", code, errs)
	}
	got, _ := os.ReadFile(outFile)
	n := len(decodeAll(t, got))
	if n == 0 || n >= len(in) {
		t.Fatalf("corrupt chunk: got %d packets of %d", n, len(in))
	}

	// Bad flags: one clear line, status 2.
	for _, args := range [][]string{
		{"query", "--from", "yesterday-ish"},
		{"query", "--store", dir, "--flow", "nonsense"},
		{"ls", "--store", "gs://x"},
		{"--chunk-bytes", "1KiB"},
	} {
		_, errs, code := runCLI(t, args...)
		if code != 2 || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: code %d, stderr %q", args, code, errs)
		}
	}
}

func TestValidateAndSizes(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("archive", flag.ContinueOnError)
	c.Register(fs)
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if err := fs.Parse([]string{"--chunk-bytes", "128MiB", "--frame-bytes", "2M", "--store", "s3://b/p"}); err != nil {
		t.Fatal(err)
	}
	if c.ChunkBytes != 128<<20 || c.FrameBytes != 2<<20 || c.Validate() != nil {
		t.Fatalf("parsed %d %d: %v", c.ChunkBytes, c.FrameBytes, c.Validate())
	}
	for _, bad := range []func(c *Config){
		func(c *Config) { c.FrameBytes = 1 },
		func(c *Config) { c.ChunkBytes = c.FrameBytes - 1 },
		func(c *Config) { c.Level = "ultra" },
		func(c *Config) { c.Store.Location = "s3:///x" },
		func(c *Config) { c.Consumer = "a.b" },
		func(c *Config) { c.AckWait = 0 },
	} {
		d := c
		bad(&d)
		if d.Validate() == nil {
			t.Errorf("invalid config accepted: %+v", d)
		}
	}
	for in, want := range map[string]int64{"1048576": 1 << 20, "64MiB": 64 << 20, "1g": 1 << 30, "4 KiB": 4 << 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5MiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}
