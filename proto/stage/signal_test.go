package stage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as a stage whose drain never ends
// (STAGE_TEST_STUCK=1), for TestSecondSignal.
func TestMain(m *testing.M) {
	if os.Getenv("STAGE_TEST_STUCK") == "1" {
		slowStopInterval = 100 * time.Millisecond
		var c Common
		fs, _ := newFS(&c)
		os.Exit(MainCode(fs, &c, []string{"--http", ""}, nil, func(ctx context.Context, d Deps) error {
			fmt.Fprintln(os.Stderr, "running")
			<-ctx.Done()
			d.Drain.Begin("storing 3 open chunks")
			select {} // a drain that never ends
		}))
	}
	os.Exit(m.Run())
}

// A stop that takes long says what it waits for; a second interrupt exits
// at once, saying so, with status 130.
func TestSecondSignal(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "STAGE_TEST_STUCK=1")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ended := false
	defer func() {
		if !ended {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	wait := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(stderr.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in:\n%s", what, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("running")
	_ = cmd.Process.Signal(syscall.SIGINT)
	wait("still stopping")
	if !strings.Contains(stderr.String(), "storing 3 open chunks") {
		t.Errorf("the slow stop does not say what it waits for:\n%s", stderr.String())
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		ended = true
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 130 || !strings.Contains(stderr.String(), "second interrupt") {
			t.Errorf("after the second interrupt: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("a second interrupt did not end the process:\n%s", stderr.String())
	}
}
