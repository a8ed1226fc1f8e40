package replay

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tapline/tapline/proto/natstest"
)

// childEnv makes the test binary run a JetStream server instead of tests,
// so memory measurements of replay do not include the server's caches.
const childEnv = "TAPLINE_REPLAY_TEST_NATS_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		srv, err := natstest.Start(natstest.Options{StoreDir: dir})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println(srv.ClientURL())
		// Run until the parent closes stdin.
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		srv.Shutdown()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// natsChild runs a JetStream server in a child process for the test and
// returns its URL.
func natsChild(t testing.TB) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+t.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "nats://") {
		t.Fatalf("child NATS server: %q %v", line, err)
	}
	return strings.TrimSpace(line)
}
