package proto

import (
	"fmt"
	"hash/fnv"
	"testing"
)

// The ids are those stored data was deduplicated under: the formats the
// spool and decap keys wrote before they shared this code.
func TestMsgIDFormats(t *testing.T) {
	if got := SeqMsgID("0a1b2c3d4e5f6071", 42); got != "0a1b2c3d4e5f6071-42" {
		t.Errorf("SeqMsgID = %q", got)
	}
	data := []byte("CLIENT_RANDOM 00 11\n")
	h := fnv.New64a()
	h.Write(data)
	want := fmt.Sprintf("keys:%s:%s:%d-%d:%016x", "prod-host", "2049:1234", int64(0), int64(20), h.Sum64())
	if got := KeysMsgID("prod-host", "2049:1234", 0, 20, data); got != want {
		t.Errorf("KeysMsgID = %q, want %q", got, want)
	}
	// A small hash keeps its leading zeros (16 hex digits).
	for _, d := range [][]byte{nil, []byte("a"), []byte("\x00\x01")} {
		h := fnv.New64a()
		h.Write(d)
		if got, want := KeysMsgID("s", "f", 5, 7, d), fmt.Sprintf("keys:s:f:5-7:%016x", h.Sum64()); got != want {
			t.Errorf("KeysMsgID(%q) = %q, want %q", d, got, want)
		}
	}
	if got := KeysMsgID("s", "f", 0, 0, []byte("x")); got != "keys:s:f:0-0:af63f54c86021707" {
		t.Errorf("KeysMsgID golden = %q", got)
	}
}
