package mirrorlab

import (
	"testing"
)

// recTB records whether Unavailable skipped or failed.
type recTB struct {
	testing.TB
	skipped, failed bool
}

func (r *recTB) Helper()               {}
func (r *recTB) Skip(...any)           { r.skipped = true }
func (r *recTB) Fatalf(string, ...any) { r.failed = true }

// TestUnavailable: a missing lab or tool skips, and fails under
// TAPLINE_REQUIRE_LAB=1 (what CI sets).
func TestUnavailable(t *testing.T) {
	t.Setenv(RequireEnv, "")
	r := &recTB{TB: t}
	Unavailable(r, "tool missing")
	if !r.skipped || r.failed {
		t.Errorf("without %s: skipped %v failed %v, want a skip", RequireEnv, r.skipped, r.failed)
	}
	t.Setenv(RequireEnv, "1")
	r = &recTB{TB: t}
	Unavailable(r, "tool missing")
	if r.skipped || !r.failed {
		t.Errorf("with %s=1: skipped %v failed %v, want a failure", RequireEnv, r.skipped, r.failed)
	}
}
