package stage

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"
)

// A word left after the flags is no sub-command the binary has: Parse and
// MainCode refuse it with one line and exit 2 instead of starting the stage
// on its defaults (`decap keys --help` used to start the live intake).
func TestStrayArgumentRejected(t *testing.T) {
	for _, args := range [][]string{{"keys", "--help"}, {"keys"}, {"--shards", "4", "extra"}} {
		var c Common
		fs, _ := newFS(&c)
		err := Parse(fs, args, Aliases)
		if err == nil || !strings.Contains(err.Error(), "unknown command or argument") {
			t.Errorf("Parse(%q) = %v, want an unknown command error", args, err)
		}
		ran := false
		var c2 Common
		fs2, _ := newFS(&c2)
		code := MainCode(fs2, &c2, append([]string{"--http", ""}, args...), nil, func(context.Context, Deps) error { ran = true; return nil })
		if code != 2 || ran {
			t.Errorf("MainCode(%q) = %d, ran %v; want 2 without running", args, code, ran)
		}
	}
}

// Every size flag takes units and raw integers alike.
func TestSizeFlags(t *testing.T) {
	var c Common
	fs, _ := newFS(&c)
	var n int
	IntSizeVar(fs, &n, "buf", 4096, "a size")
	if err := Parse(fs, []string{"--frames-max-bytes", "1GiB", "--msgs-max-bytes", "1048576", "--results-max-bytes", "64MiB", "--buf", "2K"}, nil); err != nil {
		t.Fatal(err)
	}
	if c.Streams.Frames.MaxBytes != 1<<30 || c.Streams.Msgs.MaxBytes != 1<<20 || c.Streams.Results.MaxBytes != 64<<20 || n != 2048 {
		t.Errorf("sizes: %d %d %d %d", c.Streams.Frames.MaxBytes, c.Streams.Msgs.MaxBytes, c.Streams.Results.MaxBytes, n)
	}
	if f := fs.Lookup("frames-max-bytes"); f.DefValue == "" || strings.ContainsAny(f.DefValue, " ") {
		t.Errorf("default shown as %q", f.DefValue)
	}
	var c2 Common
	fs2, _ := newFS(&c2)
	t.Setenv("TAPLINE_MSGS_MAX_BYTES", "2GiB")
	if err := Parse(fs2, nil, nil); err != nil || c2.Streams.Msgs.MaxBytes != 2<<30 {
		t.Errorf("size from env: %d %v", c2.Streams.Msgs.MaxBytes, err)
	}
	for _, bad := range []string{"lots", "-1", "1.5GiB", "1XB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	for in, want := range map[string]int64{"0": 0, "64MiB": 64 << 20, "1g": 1 << 30, "3 KiB": 3 << 10, "2TiB": 2 << 40, "7B": 7} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// A tool with its own prefix reads only its own variables, and its help
// names them; the NATS URL's help names the NATS_URL fallback.
func TestEnvPrefixAndHelp(t *testing.T) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	dir := fs.String("dir", "", "a directory")
	SetEnvPrefix(fs, "TAPLINE_TOOL_")
	SetSummary(fs, "tool does things\n  tool sub   a sub-command")
	t.Setenv("TAPLINE_DIR", "c2s")
	if err := Parse(fs, nil, nil); err != nil || *dir != "" {
		t.Errorf("TAPLINE_DIR reached the prefixed tool: %q %v", *dir, err)
	}
	t.Setenv("TAPLINE_TOOL_DIR", "/tmp/x")
	if err := Parse(fs, nil, nil); err != nil || *dir != "/tmp/x" {
		t.Errorf("TAPLINE_TOOL_DIR: %q %v", *dir, err)
	}
	var b bytes.Buffer
	PrintUsage(&b, fs)
	if !strings.Contains(b.String(), "[$TAPLINE_TOOL_DIR]") || !strings.Contains(b.String(), "tool sub   a sub-command") {
		t.Errorf("usage:\n%s", b.String())
	}
	var c Common
	fs2, _ := newFS(&c)
	b.Reset()
	PrintUsage(&b, fs2)
	if !strings.Contains(b.String(), "[$TAPLINE_NATS_URL, else $NATS_URL]") {
		t.Errorf("usage does not name NATS_URL:\n%s", b.String())
	}
}

// A flag whose name other stages use with another meaning reads its own
// variable; the variable it read before stops the start with one line
// naming the new one, instead of being ignored; the help names the new one.
func TestEnvNameOwnAndRetired(t *testing.T) {
	fs := flag.NewFlagSet("decap", flag.ContinueOnError)
	vni := fs.String("vni", "", "VNIs")
	SetEnvName(fs, "vni", "TAPLINE_DECAP_VNI", "TAPLINE_VNI")
	t.Setenv("TAPLINE_VNI", "7")
	err := Parse(fs, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "TAPLINE_VNI is no longer read") || !strings.Contains(err.Error(), "TAPLINE_DECAP_VNI") {
		t.Errorf("TAPLINE_VNI set: %v, want an error naming TAPLINE_DECAP_VNI", err)
	}
	t.Setenv("TAPLINE_DECAP_VNI", "8")
	if err := Parse(fs, nil, nil); err != nil || *vni != "8" {
		t.Errorf("TAPLINE_DECAP_VNI: %q %v", *vni, err)
	}
	t.Setenv("TAPLINE_VNI", "")
	t.Setenv("TAPLINE_DECAP_VNI", "")
	*vni = ""
	if err := Parse(fs, nil, nil); err != nil {
		t.Errorf("an empty TAPLINE_VNI (compose's default) refused: %v", err)
	}
	var b bytes.Buffer
	PrintUsage(&b, fs)
	if !strings.Contains(b.String(), "[$TAPLINE_DECAP_VNI]") {
		t.Errorf("usage:\n%s", b.String())
	}
}
