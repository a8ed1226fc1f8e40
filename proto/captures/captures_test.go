package captures

import (
	"path/filepath"
	"testing"

	"github.com/tapline/tapline/proto"
)

const expected = "../../testdata/captures/expected"

func TestReadWSMessages(t *testing.T) {
	w, err := ReadWSMessages(filepath.Join(expected, "ws-broker-json.pcap.wsmsgs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if w.Client != "127.0.0.1:38776" || w.Server != "127.0.0.1:27599" {
		t.Errorf("endpoints %s -> %s", w.Client, w.Server)
	}
	c2s, s2c := w.Msgs[proto.ClientToServer], w.Msgs[proto.ServerToClient]
	if len(c2s) != 5 || len(s2c) != 4 {
		t.Fatalf("%d c2s and %d s2c messages, want 5 and 4", len(c2s), len(s2c))
	}
	if m := c2s[0]; m.Kind != "text" || m.Len != 24 || m.Sha1 != "bf297013" {
		t.Errorf("first c2s message %+v", m)
	}
	if m := c2s[4]; m.Kind != "close" || m.Code != 1000 {
		t.Errorf("close %+v", m)
	}
}

// TestCutShortLine: the oversized close's line is cut short in the file;
// its kind, length and code are still read.
func TestCutShortLine(t *testing.T) {
	w, err := ReadWSMessages(filepath.Join(expected, "ws-oversized-close.pcapng.wsmsgs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s2c := w.Msgs[proto.ServerToClient]
	if len(s2c) != 1 || s2c[0].Kind != "close" || s2c[0].Len != 258 || s2c[0].Code != 1000 {
		t.Fatalf("s2c %+v", s2c)
	}
}

func TestMissingFile(t *testing.T) {
	if _, err := ReadWSMessages("no/such/file"); err == nil {
		t.Fatal("no error for a missing file")
	}
}
