package mirrorlab

import (
	"os"
	"testing"
)

// RequireEnv names the environment variable that turns "cannot run here"
// skips (not root, a tool or kernel feature missing) into failures: CI
// sets TAPLINE_REQUIRE_LAB=1 so that a machine missing the lab or a tool
// cannot pass by skipping the tests that would catch a loss.
const RequireEnv = "TAPLINE_REQUIRE_LAB"

// Unavailable skips the test because something it needs (root, the
// kernel lab, a tool) is missing here, or fails it when RequireEnv is 1.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1: required)", reason, RequireEnv)
		return
	}
	t.Skip(reason)
}
