package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary act as decap when asked.
func TestMain(m *testing.M) {
	if os.Getenv("DECAP_TEST_AS_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func runDecap(args ...string) (string, int) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "DECAP_TEST_AS_MAIN=1")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		panic(err)
	}
	return string(out), code
}

// An unknown sub-command or stray word exits 2 with one line instead of
// starting the live intake on the default ports; --help names send.
func TestUnknownCommandAndHelp(t *testing.T) {
	for _, args := range [][]string{{"nosuch", "--help"}, {"nosuch"}, {"--http", "", "stray"}} {
		out, code := runDecap(args...)
		if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "unknown command or argument") {
			t.Errorf("decap %q: exit %d, output %q; want exit 2 and one line", args, code, out)
		}
	}
	out, code := runDecap("--help")
	if code != 0 || !strings.Contains(out, "decap send FILE") || !strings.Contains(out, "healthcheck") || !strings.Contains(out, "NATS_URL") {
		t.Errorf("decap --help: exit %d, output:\n%s", code, out)
	}
}

// An unreachable --nats-url ends a one-shot --read within
// --nats-connect-wait with exit 2 and one line naming the real cause;
// a URL of no NATS scheme is refused before anything starts.
func TestNATSURLErrors(t *testing.T) {
	capture := "../../../testdata/captures/ws-broker-json.pcap"
	out, code := runDecap("--read", capture, "--nats-url", "nats://127.0.0.1:1", "--nats-connect-wait", "2s", "--http", "", "--log-level", "error")
	if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "connection refused") || !strings.Contains(out, "--nats-url") {
		t.Errorf("unreachable NATS: exit %d, output %q; want exit 2 and one line saying connection refused", code, out)
	}
	out, code = runDecap("--read", capture, "--nats-url", "bogus://x", "--http", "")
	if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, `scheme "bogus"`) {
		t.Errorf("bogus://x: exit %d, output %q", code, out)
	}
}
