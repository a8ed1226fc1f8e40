// Package s3test runs versitygw (an S3-compatible gateway with a posix
// backend) for tests: a real S3 server on a loopback port, with a bucket.
package s3test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// Credentials of the test server; tests set them as AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY.
const (
	AccessKey = "tapline-test"
	SecretKey = "tapline-test-secret"
	Bucket    = "tapline"
)

// Server is a running versitygw.
type Server struct {
	t    testing.TB
	bin  string
	root string
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// Binary returns the versitygw binary path, or "" when it is not installed.
func Binary() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Start runs versitygw on a free loopback port with a bucket named Bucket,
// sets the AWS credential environment for the test, and stops the server
// when the test ends. It skips the test when versitygw is not installed (fails it with TAPLINE_REQUIRE_LAB=1).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		mirrorlab.Unavailable(t, "versitygw not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0): S3 tests skipped")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, Bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{t: t, bin: bin, root: root, addr: addr}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// Endpoint is the server's URL.
func (s *Server) Endpoint() string { return "http://" + s.addr }

// Root is the posix directory holding the buckets.
func (s *Server) Root() string { return s.root }

func (s *Server) start() {
	s.t.Helper()
	var lastErr error
	for range 50 {
		args := []string{"--access", AccessKey, "--secret", SecretKey, "--port", s.addr, "--quiet", "posix"}
		if !xattrOK(s.root) {
			// Without extended attributes versitygw keeps no metadata
			// (multipart uploads then fail: no part ETags).
			args = append(args, "--nometa")
		}
		cmd := exec.Command(s.bin, append(args, s.root)...)
		cmd.Stdout, cmd.Stderr = nil, nil
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("start versitygw: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		if lastErr = waitUp(s.addr, done); lastErr == nil {
			s.cmd, s.done = cmd, done
			return
		}
		cmd.Process.Kill()
		<-done
		time.Sleep(100 * time.Millisecond) // the port may still be held by the previous server
	}
	s.t.Fatalf("versitygw did not start on %s: %v", s.addr, lastErr)
}

// xattrOK reports whether dir supports user extended attributes, where
// versitygw's posix backend keeps object metadata.
func xattrOK(dir string) bool {
	return syscall.Setxattr(dir, "user.tapline-probe", []byte("1"), 0) == nil
}

// waitUp polls the server until it answers HTTP (any status) or exits.
func waitUp(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(20 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited")
		default:
		}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+addr+"/", nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not answering after 20s")
}

// Stop kills the server (the data stays in Root).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same address and directory.
func (s *Server) Restart() { s.Stop(); s.start() }
