package stage

import (
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
)

// TestKeysStreamFlags: every stage takes the TAPLINE_KEYS limits with the
// other stream limits, defaulting to proto.DefaultLimits.
func TestKeysStreamFlags(t *testing.T) {
	var c Common
	fs, _ := newFS(&c)
	if err := Parse(fs, nil, Aliases); err != nil {
		t.Fatal(err)
	}
	if c.Streams.Keys != proto.DefaultLimits[proto.KeysStream] {
		t.Errorf("default keys limits %+v, want %+v", c.Streams.Keys, proto.DefaultLimits[proto.KeysStream])
	}
	var c2 Common
	fs2, _ := newFS(&c2)
	t.Setenv("TAPLINE_KEYS_MAX_BYTES", "1048576")
	if err := Parse(fs2, []string{"--keys-max-age", "2h"}, Aliases); err != nil {
		t.Fatal(err)
	}
	cfg, err := c2.Streams.StreamConfig(proto.KeysStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxAge != 2*time.Hour || cfg.MaxBytes != 1<<20 {
		t.Errorf("keys stream config max age %s bytes %d, want 2h and 1MiB", cfg.MaxAge, cfg.MaxBytes)
	}
}
