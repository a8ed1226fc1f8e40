package allinone

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinariesDoNotLinkTesting: the production binaries carry no test kit
// (package testing, the kernel lab, the test servers), so what ships is
// only what runs. The all-in-one embeds its NATS server through
// proto/natsserver, not through the tests' natstest.
func TestBinariesDoNotLinkTesting(t *testing.T) {
	forbidden := []string{
		"testing",
		"github.com/tapline/tapline/proto/natstest",
		"github.com/tapline/tapline/proto/mirrorlab",
		"github.com/tapline/tapline/proto/tlstest",
	}
	for _, cmd := range []string{"allinone/cmd/tapline", "decap/cmd/decap", "reassemble/cmd/reassemble", "replay/cmd/replay", "archive/cmd/archive"} {
		out, err := exec.Command("go", "list", "-deps", "./"+filepath.ToSlash(filepath.Join(repoRoot, cmd))).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", cmd, err, out)
		}
		deps := strings.Fields(string(out))
		for _, f := range forbidden {
			for _, d := range deps {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s links %s", cmd, d)
				}
			}
		}
	}
}
