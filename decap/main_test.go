package decap

import (
	"context"
	"flag"
	"testing"

	"github.com/tapline/tapline/decap/send"
	"github.com/tapline/tapline/proto/stage"
)

// TestExitCodes: a bad flag or value exits 2 with one line; --help exits 0.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, 0},
		{[]string{"--vni", "x"}, 2},
		{[]string{"--no-such-flag"}, 2},
		{[]string{"--read", "/nonexistent.pcap", "--nats-url", "nats://127.0.0.1:1"}, 2}, // a runtime configuration error
	} {
		var cfg Config
		fs := flag.NewFlagSet("decap", flag.ContinueOnError)
		cfg.Register(fs)
		code := stage.MainCode(fs, &cfg.Common, append(tc.args, "--http", ""), cfg.Validate, func(ctx context.Context, d stage.Deps) error {
			return Run(ctx, cfg, d)
		})
		if code != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.args, code, tc.want)
		}
	}
	if code := send.Main([]string{"--to", "127.0.0.1:1"}); code != 2 {
		t.Errorf("send without FILE: exit %d", code)
	}
	if code := send.Main([]string{captures + "vxlan-icmp-arp.pcap"}); code != 2 {
		t.Errorf("send without --to: exit %d", code)
	}
}
