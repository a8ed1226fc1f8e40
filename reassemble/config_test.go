package reassemble

import (
	"flag"
	"strings"
	"testing"

	"github.com/tapline/tapline/proto/stage"
)

func TestConfigFlagsAndEnv(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("reassemble", flag.ContinueOnError)
	c.Register(fs)
	t.Setenv("TAPLINE_REORDER_WINDOW", "65536")
	t.Setenv("NATS_URL", "nats://127.0.0.1:4999")
	if err := stage.Parse(fs, []string{"--shard", "1,3", "--max-connections", "7"}, stage.Aliases); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ReorderWindow != 65536 || c.MaxConnections != 7 || c.Common.NATSURL != "nats://127.0.0.1:4999" || c.Common.HTTPAddr != ":9102" {
		t.Fatalf("config %+v", c)
	}
	if s, _ := c.shards(); len(s) != 2 || s[0] != 1 || s[1] != 3 {
		t.Fatalf("shards %v", s)
	}
	for _, bad := range []struct{ args, want string }{
		{"--shard 99", "--shard"},
		{"--reorder-window 10", "--reorder-window"},
		{"--max-connections 0", "--max-connections"},
		{"--idle-timeout 1ms", "--idle-timeout"},
		{"--pinned-ttl 0s", "--pinned-ttl"},
		{"--max-buffered-bytes 5", "--max-buffered-bytes"},
		{"--max-seq-jump 5", "--max-seq-jump"},
		{"--max-flow-rate 5", "--max-flow-rate"},
	} {
		var c Config
		fs := flag.NewFlagSet("reassemble", flag.ContinueOnError)
		c.Register(fs)
		if err := stage.Parse(fs, strings.Fields(bad.args), stage.Aliases); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want one naming %s", bad.args, err, bad.want)
		}
	}
}
