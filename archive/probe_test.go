package archive

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// An S3 endpoint nothing answers at is noticed at start: exit 2 with one
// line naming the cause and the flags, not when the first chunk is stored
// --chunk-age (5 minutes) later. No NATS is needed to find out.
func TestUnreachableStoreAtStart(t *testing.T) {
	cmd := exec.Command(archiveBinary(t), "--store", "s3://bucket/prefix", "--s3-endpoint", "http://127.0.0.1:1",
		"--s3-path-style", "--s3-region", "us-east-1", "--store-wait", "1s",
		"--nats-url", "nats://127.0.0.1:1", "--http", "", "--log-level", "error")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	line := strings.TrimSpace(string(out))
	if !ok || ee.ExitCode() != 2 || strings.Contains(line, "\n") || !strings.Contains(line, "connection refused") || !strings.Contains(line, "--s3-endpoint") {
		t.Fatalf("archive with an unreachable S3 endpoint: %v, output %q; want exit 2 and one line saying connection refused", err, out)
	}
}
