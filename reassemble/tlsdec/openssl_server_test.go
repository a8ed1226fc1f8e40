package tlsdec

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
)

// startOpenSSLServer runs `openssl s_server` on a free loopback port with
// cert and key, accepting naccept connections, plus args; it returns the
// openssl binary, the port and the server's stdin (its commands, e.g. K
// for a KeyUpdate), once the server says it accepts. The server is killed
// when the test ends.
func startOpenSSLServer(t *testing.T, cert, key string, naccept int, args ...string) (bin string, port int, stdin io.WriteCloser) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not installed (Debian package openssl)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	srv := exec.Command(bin, append([]string{"s_server", "-accept", fmt.Sprint(port), "-cert", cert, "-key", key,
		"-naccept", fmt.Sprint(naccept), "-ign_eof"}, args...)...)
	stdout, _ := srv.StdoutPipe()
	stdin, _ = srv.StdinPipe()
	srv.Stderr = io.Discard
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.Contains(sc.Text(), "ACCEPT") {
	}
	go io.Copy(io.Discard, stdout)
	return bin, port, stdin
}
