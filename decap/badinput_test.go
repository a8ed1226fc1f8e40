package decap

import (
	"context"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// runReadErr runs decap --read path and returns Run's error.
func runReadErr(t *testing.T, path string) (error, string) {
	t.Helper()
	_, url := natstest.Run(t)
	cfg := DefaultConfig()
	cfg.Common.NATSURL = url
	cfg.Common.HTTPAddr = ""
	cfg.Read = path
	d, _ := stage.TestDeps("decap")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return Run(ctx, cfg, d), url
}

// TestCorruptCaptures: a truncated, garbage, empty or lying capture gives
// one clear error (frames before the damage are still published), never a
// crash, a hang or unbounded memory.
func TestCorruptCaptures(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(captures + "aws-vpc-mirror-vxlan-ssh.pcap")
	if err != nil {
		t.Fatal(err)
	}
	huge := append([]byte(nil), good[:24+16]...)
	binary.LittleEndian.PutUint32(huge[24+8:], 0x7fffffff) // caplen 2 GiB
	binary.LittleEndian.PutUint32(huge[24+12:], 0x7fffffff)
	files := map[string][]byte{
		"truncated.pcap": good[:5000],
		"garbage.pcap":   []byte(strings.Repeat("not a capture at all ", 50)),
		"empty.pcap":     nil,
		"huge.pcap":      huge,
		"header.pcapng":  {0x0a, 0x0d, 0x0d, 0x0a, 0xff, 0xff, 0xff, 0x7f, 0x4d, 0x3c, 0x2b, 0x1a},
	}
	for name, b := range files {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			err, url := runReadErr(t, path)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "--read") {
				t.Fatalf("error not one clear line: %q", err)
			}
			if name == "truncated.pcap" {
				if got := fetchFrames(t, url); len(got) == 0 {
					t.Fatal("frames before the damage not published")
				}
			}
			t.Logf("%s: %v", name, err)
		})
	}
	if err, _ := runReadErr(t, filepath.Join(dir, "missing.pcap")); err == nil || !strings.Contains(err.Error(), "--read") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		bad  string
	}{
		{[]string{"--vni", "abc"}, "--vni"},
		{[]string{"--vni", "16777216"}, "--vni"},
		{[]string{"--allow-src", "10.0.0.0/33"}, "--allow-src"},
		{[]string{"--listen-addr", "localhost"}, "--listen-addr"},
		{[]string{"--vxlan-port", "70000"}, "--vxlan-port"},
		{[]string{"--vxlan-port", "6081"}, "differ"},
		{[]string{"--vxlan-port", "0", "--geneve-port", "0"}, "nothing to read"},
		{[]string{"--max-datagram", "1500"}, "--max-datagram"},
		{[]string{"--batch-bytes", "10"}, "--batch-bytes"},
		{[]string{"--buffer-bytes", "100"}, "--buffer-bytes"},
		{[]string{"--shards", "0"}, "--shards"},
		{[]string{"--allow-src", "10.0.0.0/8", "--allow-any-source"}, "exclude each other"},
		{[]string{"--max-vnis", "0"}, "--max-vnis"},
		{[]string{"--max-vnis", "5000"}, "--max-vnis"},
		{[]string{"--max-vnis", "1", "--vni", "1,2"}, "--max-vnis"},
	} {
		var c Config
		fs := flag.NewFlagSet("decap", flag.ContinueOnError)
		c.Register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.bad) {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
	c := DefaultConfig()
	c.VNI = []string{"5569041", "0x0a"}
	c.AllowSrc = []string{"172.31.0.0/16", "2001:db8::1"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.vnis) != 2 || c.vnis[1] != 10 || len(c.prefixes) != 2 || c.prefixes[1].Bits() != 128 {
		t.Fatalf("%v %v", c.vnis, c.prefixes)
	}
	if a := c.listenAddrs(); len(a) != 2 || a[0] != ":4789" || a[1] != ":6081" {
		t.Fatalf("listen addrs %v", a)
	}
}

// TestFilteredRead: --vni and --allow-src drop and count.
func TestFilteredRead(t *testing.T) {
	got, reg, _ := runRead(t, captures+"geneve-ssh.pcap", func(c *Config) { c.VNI = []string{"10"} })
	for _, g := range got {
		if g.VNI != 10 {
			t.Fatalf("VNI %d published", g.VNI)
		}
	}
	if len(got) == 0 || metric(t, reg, "tapline_decap_filtered_total", "reason", "vni") == 0 {
		t.Fatalf("%d frames, filtered %v", len(got), metric(t, reg, "tapline_decap_filtered_total"))
	}
	got, reg, _ = runRead(t, captures+"aws-vpc-mirror-vxlan-ssh.pcap", func(c *Config) { c.AllowSrc = []string{"10.0.0.0/8"} })
	if len(got) != 0 || metric(t, reg, "tapline_decap_filtered_total", "reason", "src") != 100 {
		t.Fatalf("%d frames published from a disallowed source", len(got))
	}
}
