package ledger

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapline/tapline/proto"
)

func TestReadExpected(t *testing.T) {
	in := `{"client":"10.0.0.2:1","server":"10.0.0.1:80","dir":"s2c","opcode":"binary","size":3,"sha256":"aa"}

{"client":"10.0.0.3:1","server":"10.0.0.1:80","dir":"s2c","opcode":"text","size":4,"sha256":"bb"}
{"client":"10.0.0.2:1","server":"10.0.0.1:80","dir":"s2c","opcode":"binary","size":5,"sha256":"cc"}
`
	prod, err := ReadExpected(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(prod) != 2 || len(prod[0].Msgs) != 2 || prod[0].Msgs[1].SHA256 != "cc" || prod[1].Dir != proto.ServerToClient {
		t.Errorf("got %+v", prod)
	}
	if _, err := ReadExpected(strings.NewReader(`{"dir":"up"}`)); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad dir: err %v, want one naming line 1", err)
	}
	if _, err := ReadExpected(strings.NewReader("{")); err == nil {
		t.Errorf("malformed line accepted")
	}
}

func TestMainUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--expected is required") {
		t.Errorf("no --expected: exit %d, stderr %q", code, errb.String())
	}
	bad := filepath.Join(t.TempDir(), "e.jsonl")
	if err := os.WriteFile(bad, []byte("not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := Main([]string{"--expected", bad}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "line 1") {
		t.Errorf("bad file: exit %d, stderr %q", code, errb.String())
	}
}
