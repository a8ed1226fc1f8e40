package main

import (
	"os/exec"
	"strings"
	"testing"
)

// taplineOut runs the tapline command and returns its combined output and
// exit code.
func taplineOut(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := tapline(args...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// `tapline --help` lists the sub-commands (it used to print run's flags).
func TestHelpListsCommands(t *testing.T) {
	for _, h := range []string{"--help", "-h", "help"} {
		out, code := taplineOut(t, nil, h)
		if code != 0 || !strings.Contains(out, "testsystem") || !strings.Contains(out, "demo") || !strings.Contains(out, "ledger") {
			t.Errorf("tapline %s: exit %d\n%s", h, code, out)
		}
	}
}

// A stray word after `tapline run` exits 2 with one line.
func TestRunStrayArgument(t *testing.T) {
	out, code := taplineOut(t, nil, "run", "--http", "", "stray")
	if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, `"stray"`) {
		t.Errorf("tapline run stray: exit %d, output %q", code, out)
	}
}

// tapline demo reads TAPLINE_DEMO_* (TAPLINE_DIR is replay's --dir) and
// says so in its help; the size flags show units.
func TestDemoEnvNames(t *testing.T) {
	out, code := taplineOut(t, []string{"TAPLINE_DIR=c2s"}, "demo", "--help")
	if code != 0 || !strings.Contains(out, "[$TAPLINE_DEMO_DIR]") || strings.Contains(out, "[$TAPLINE_DIR]") {
		t.Errorf("tapline demo --help: exit %d\n%s", code, out)
	}
	out, code = taplineOut(t, []string{"TAPLINE_DEMO_VNI=x"}, "demo")
	if code != 2 || !strings.Contains(out, "TAPLINE_DEMO_VNI") {
		t.Errorf("TAPLINE_DEMO_VNI not read: exit %d %q", code, out)
	}
	out, code = taplineOut(t, nil, "run", "--help")
	if code != 0 || !strings.Contains(out, "(default 16GiB)") {
		t.Errorf("tapline run --help shows no size units:\n%s", out)
	}
}
