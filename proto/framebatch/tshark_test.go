package framebatch

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// TestTsharkReadsBatches checks the contract's promise that concatenated
// batches form a pcapng file other tools read, with the interface names,
// nanosecond timestamps and original lengths intact.
func TestTsharkReadsBatches(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		mirrorlab.Unavailable(t, "tshark not installed")
	}
	in := sampleFrames()
	var all []byte
	var w Writer
	w.App = "tapline test"
	for _, group := range [][]Frame{in[:2], in[2:]} {
		w.Reset()
		for i := range group {
			w.Add(&group[i])
		}
		all = append(all, w.Bytes()...)
	}
	path := filepath.Join(t.TempDir(), "batches.pcapng")
	if err := os.WriteFile(path, all, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.interface_name",
		"-e", "frame.cap_len", "-e", "frame.len", "-e", "frame.time_epoch").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(in) {
		t.Fatalf("tshark saw %d packets, want %d:\n%s", len(lines), len(in), out)
	}
	// Interface names are checked in the first section only: Wireshark 4.0
	// (Debian 12) numbers the interfaces of later sections as if they
	// continued the first one's list (see proto/README.md).
	want := []string{
		"vxlan/5569041/172.31.0.238\t60\t60\t1700000000.123456789",
		"geneve/7/2001:db8::1\t8500\t9001\t1700000000.123456999",
		"\t3\t3\t1700000001.000000000",
		"\t0\t0\t0.000000005",
	}
	for i, w := range want {
		got := lines[i]
		if i >= 2 {
			got = got[strings.IndexByte(got, '\t'):]
		}
		if got != w {
			t.Errorf("packet %d: tshark says %q, want %q", i, got, w)
		}
	}
}
