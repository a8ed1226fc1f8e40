package decap

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/proto/natstest"
)

// TestSecondInstanceRefused: a second decap process on the UDP port a
// running one listens on exits 2 with one line naming the port, instead
// of silently taking half the mirror traffic (SO_REUSEPORT). Once the
// first has exited, the port is free again (a restart).
func TestSecondInstanceRefused(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "decap")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/decap").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	_, url := natstest.Run(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	args := []string{"--nats-url", url, "--http", "", "--vxlan-port", strconv.Itoa(port), "--geneve-port", "0", "--sockets", "2"}

	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &stderr
	}
	listening := func() bool { return udpin.CheckPort(netip.Addr{}, uint16(port)) != nil }
	waitListening := func(cmd *exec.Cmd, stderr *bytes.Buffer) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !listening() {
			if time.Now().After(deadline) {
				t.Fatalf("decap not listening on %d: %s", port, stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	first, ferr := start()
	t.Cleanup(func() { _ = first.Process.Kill(); _, _ = first.Process.Wait() })
	waitListening(first, ferr)

	second, serr := start()
	done := make(chan error, 1)
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("second decap: %v, want exit 2; stderr:\n%s", err, serr)
		}
	case <-time.After(60 * time.Second):
		_ = second.Process.Kill()
		t.Fatalf("second decap on port %d kept running (sharing the port); stderr:\n%s", port, serr)
	}
	lines := strings.Split(strings.TrimSpace(serr.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, "UDP port "+strconv.Itoa(port)+" is already bound by process "+strconv.Itoa(first.Process.Pid)) {
		t.Errorf("second decap's last line %q does not name the port and the first process", last)
	}
	if first.ProcessState != nil {
		t.Fatalf("first decap exited")
	}

	// Restart: once the first has exited, a new one starts.
	_ = first.Process.Signal(syscall.SIGTERM)
	if err := first.Wait(); err != nil {
		t.Fatalf("first decap: %v\n%s", err, ferr)
	}
	third, terr := start()
	waitListening(third, terr)
	_ = third.Process.Signal(syscall.SIGTERM)
	if err := third.Wait(); err != nil {
		t.Fatalf("restarted decap: %v\n%s", err, terr)
	}
}
