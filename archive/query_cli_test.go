package archive

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// openPTY opens a pseudo terminal pair: the child gets the terminal side
// as its stdout, as a user's shell would give it.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo terminals here: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// archive query with stdout on a terminal refuses to write binary pcapng
// there (exit 2, one line naming --out and the pipe) and writes nothing.
func TestQueryRefusesTerminal(t *testing.T) {
	_, tty := openPTY(t)
	dir := t.TempDir()
	cmd := exec.Command(archiveBinary(t), "query", "--store", dir, "--from", "-1h")
	cmd.Stdout = tty
	var eb strings.Builder
	cmd.Stderr = &eb
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || !strings.Contains(eb.String(), "--out FILE") || strings.Count(strings.TrimSpace(eb.String()), "\n") != 0 {
		t.Fatalf("query to a terminal: %v, stderr %q; want exit 2 and one line", err, eb.String())
	}
}

// archive ls and query read TAPLINE_QUERY_* and keep TAPLINE_STORE; the
// stages' TAPLINE_VNI (decap's allow list, replay's selection) and the
// old TAPLINE_FROM no longer reach them.
func TestQueryEnvNames(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(archiveBinary(t), "ls")
	cmd.Env = append(os.Environ(), "TAPLINE_VNI=not-a-vni", "TAPLINE_FROM=garbage", "TAPLINE_STORE="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "no chunk in "+dir) {
		t.Errorf("archive ls with the stages' variables set: %v\n%s", err, out)
	}
	cmd = exec.Command(archiveBinary(t), "ls")
	cmd.Env = append(os.Environ(), "TAPLINE_QUERY_FROM=garbage", "TAPLINE_STORE="+dir)
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--from") {
		t.Errorf("TAPLINE_QUERY_FROM not read: %v\n%s", err, out)
	}
	help, _ := exec.Command(archiveBinary(t), "query", "--help").CombinedOutput()
	if !strings.Contains(string(help), "$TAPLINE_QUERY_OUT") || !strings.Contains(string(help), "$TAPLINE_STORE") {
		t.Errorf("query --help does not name the variables:\n%s", help)
	}
}
