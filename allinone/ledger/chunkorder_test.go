package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/tapline/tapline/proto"
)

// TestChunksAheadPutBackInOrder: a message whose chunk 0 is stored after
// its chunks 1 and 2 (chunk 0 resent after its acknowledgement was lost;
// proto.ReorderChunks allows it) is one exact message, as replay delivers
// it. The ledger called the chunk out of order a wire violation and the
// message unaccounted, though the test system had it exact. More chunks
// ahead than the contract allows stay a violation.
func TestChunksAheadPutBackInOrder(t *testing.T) {
	parts := [][]byte{[]byte("first "), []byte("second "), []byte("third")}
	add := func(s *Stream, idx int, n int) error {
		c := &proto.Chunk{Conn: "c1", VNI: 1, Dir: proto.ServerToClient, Seq: 1, Index: idx, Last: idx == n-1, Opcode: proto.OpText, Complete: true}
		body := []byte("x")
		if idx < len(parts) {
			body = parts[idx]
		}
		if c.Last {
			c.Size = int64(len("first second third"))
		}
		return s.Add(c.Header(), body, uint64(idx+1))
	}
	s := NewStream()
	for _, idx := range []int{1, 2, 0} {
		if err := add(s, idx, 3); err != nil {
			t.Fatal(err)
		}
	}
	ms := s.Messages()
	sum := sha256.Sum256([]byte("first second third"))
	if len(ms) != 1 || !ms[0].Complete || ms[0].SHA256 != hex.EncodeToString(sum[:]) || ms[0].Chunks != 3 || s.Pending() != 0 {
		t.Fatalf("messages %+v, pending %d: want the one message, exact", ms, s.Pending())
	}

	s = NewStream()
	n := proto.ReorderChunks + 2
	var err error
	for idx := 1; idx < n && err == nil; idx++ {
		err = add(s, idx, n)
	}
	if err == nil {
		t.Fatalf("%d chunks ahead of chunk 0 accepted; the contract allows %d", n-1, proto.ReorderChunks-1)
	}
}
