package capturecmd

import (
	"flag"
	"strings"
	"testing"
)

func parse(t *testing.T, args ...string) (*Config, error) {
	t.Helper()
	var c Config
	fs := flag.NewFlagSet("decap capture", flag.ContinueOnError)
	c.Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &c, c.Validate()
}

func TestValidate(t *testing.T) {
	c, err := parse(t, "--iface", "eth0", "--filter", "tcp port 443", "--direction", "in")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.kernelFilter(); got != "inbound and (tcp port 443)" {
		t.Errorf("kernel filter %q", got)
	}
	if len(c.prog) == 0 {
		t.Error("no program compiled")
	}
	for _, bad := range [][]string{
		{},
		{"--iface", "eth0", "--filter", "tcp port"},
		{"--iface", "eth0", "--direction", "sideways"},
		{"--iface", "eth0", "--vni", "16777216"},
		{"--iface", "eth0", "--spool-bytes", "10"},
		{"--iface", "eth0", "--upload-rate", "1000"},
		{"--iface", "eth0", "--max-memory", "1048576"},
		{"--iface", "eth0", "--max-cpu", "0"},
	} {
		if _, err := parse(t, bad...); err == nil {
			t.Errorf("%s: no error", strings.Join(bad, " "))
		}
	}
}
