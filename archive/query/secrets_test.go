package query

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// TestSpliceSecrets: the block goes right after the section header, in the
// section's byte order, padded, and the rest is copied unchanged.
func TestSpliceSecrets(t *testing.T) {
	w := &framebatch.Writer{App: "test"}
	w.Add(&framebatch.Frame{TimeNs: 1, Link: flow.LinkEthernet, OrigLen: 3, Data: []byte{1, 2, 3}})
	in := w.Bytes()
	var out bytes.Buffer
	secrets := []byte("CLIENT_RANDOM " + strings.Repeat("ab", 32) + " " + strings.Repeat("cd", 48) + "\n")
	if err := spliceSecrets(&out, bytes.NewReader(in), secrets); err != nil {
		t.Fatal(err)
	}
	b := out.Bytes()
	shb := int(binary.LittleEndian.Uint32(b[4:]))
	dsb := b[shb:]
	if binary.LittleEndian.Uint32(dsb) != 0x0A || binary.LittleEndian.Uint32(dsb[8:]) != 0x544c534b {
		t.Fatalf("no secrets block after the section header")
	}
	n := int(binary.LittleEndian.Uint32(dsb[4:]))
	if n%4 != 0 || binary.LittleEndian.Uint32(dsb[n-4:]) != uint32(n) || !bytes.Equal(dsb[16:16+len(secrets)], secrets) {
		t.Fatalf("bad secrets block of %d bytes", n)
	}
	if !bytes.Equal(append(append([]byte(nil), b[:shb]...), dsb[n:]...), in) {
		t.Fatal("the rest of the capture changed")
	}
	r := framebatch.NewReader(b)
	var f framebatch.Frame
	if err := r.Next(&f); err != nil || !bytes.Equal(f.Data, []byte{1, 2, 3}) {
		t.Fatalf("capture unreadable after the splice: %v", err)
	}
}

// FuzzKeyLineRandom: any line is taken or refused without panicking, and a
// taken line's random is its second field.
func FuzzKeyLineRandom(f *testing.F) {
	f.Add([]byte("CLIENT_RANDOM " + strings.Repeat("ab", 32) + " " + strings.Repeat("cd", 48) + "\n"))
	f.Add([]byte("# comment\n"))
	f.Add([]byte("A B C"))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, ok := keyLineRandom(line)
		if ok && !strings.EqualFold(hex.EncodeToString(r[:]), string(bytes.Fields(line)[1])) {
			t.Fatalf("random %x is not the line's", r)
		}
	})
}

// FuzzClientRandom: any frame is looked at without panicking.
func FuzzClientRandom(f *testing.F) {
	f.Add(uint8(flow.LinkEthernet), []byte{})
	f.Add(uint8(flow.LinkRaw), append([]byte{0x45, 0, 0, 60, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 1, 187, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x18, 0, 0, 0, 0, 0, 0, 0x16, 3, 1, 0, 100, 1}, make([]byte, 60)...))
	f.Fuzz(func(t *testing.T, link uint8, data []byte) {
		ClientRandom(flow.LinkType(link), data)
	})
}
