package message_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// gridStream builds a direction of messages (random binary, JSON text,
// masked or not) fragmented into frames of at most frameSize bytes, with
// pings between fragments: the dense frame grid that false headers in
// random payloads like to land on.
func gridStream(rng *rand.Rand, masked bool, n, frameSize int) ([]byte, []sent) {
	var b bytes.Buffer
	var msgs []sent
	for i := 0; i < n; i++ {
		size := 1 + rng.Intn(6000)
		p := make([]byte, size)
		op := uint8(wsframe.OpBinary)
		if rng.Intn(3) == 0 {
			op = wsframe.OpText
			var s bytes.Buffer
			for s.Len() < size {
				fmt.Fprintf(&s, `{"k":%d,"v":"%x"}`, rng.Intn(1e6), rng.Int63())
			}
			copy(p, s.Bytes())
		} else {
			rng.Read(p)
		}
		msgs = append(msgs, sent{opName(op), sha256.Sum256(p), size})
		for off := 0; off < size; off += frameSize {
			end := min(size, off+frameSize)
			fop := op
			if off > 0 {
				fop = wsframe.OpContinuation
			}
			h := wsframe.Header{Fin: end == size, Opcode: fop, Masked: masked, Length: uint64(end - off)}
			if masked {
				rng.Read(h.Key[:])
			}
			b.Write(wsframe.Append(nil, h))
			q := bytes.Clone(p[off:end])
			if masked {
				wsframe.MaskCopy(q, q, h.Key, 0)
			}
			b.Write(q)
			if rng.Intn(10) == 0 {
				b.Write(frame(masked, wsframe.OpPing, true, false, []byte("ping")))
			}
		}
	}
	return b.Bytes(), msgs
}

func opName(op uint8) string {
	if op == wsframe.OpText {
		return proto.OpText
	}
	return proto.OpBinary
}

// TestResyncNeverGarbage: mid-stream starts and header losses at random
// places of dense frame grids never produce a complete message that was
// not sent, and decoding does resume.
func TestResyncNeverGarbage(t *testing.T) {
	iters := 300
	if testing.Short() {
		iters = 60
	}
	seed := int64(7)
	if v := os.Getenv("TAPLINE_RESYNC_ITERS"); v != "" { // for long local runs
		iters, _ = strconv.Atoi(v)
		seed = time.Now().UnixNano()
		if v := os.Getenv("TAPLINE_RESYNC_SEED"); v != "" {
			seed, _ = strconv.ParseInt(v, 10, 64)
		}
		t.Logf("seed %d", seed)
	}
	rng := rand.New(rand.NewSource(seed))
	for it := 0; it < iters; it++ {
		masked := it%2 == 1
		dir := proto.ServerToClient
		if masked {
			dir = proto.ClientToServer
		}
		st, msgs := gridStream(rng, masked, 60, []int{125, 512, 4096}[it%3])
		cut := rng.Intn(len(st) / 2)
		var ev []event
		midStream := it%4 < 2
		if midStream {
			ev = []event{{dir: dir, b: st[cut:]}}
		} else {
			resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
			ev = []event{{dir: proto.ServerToClient, b: []byte(resp)}, {dir: dir, b: st[:cut]}, {dir: dir, gap: int64(1 + rng.Intn(3000))}}
			if g := int(ev[2].gap); cut+g < len(st) {
				ev = append(ev, event{dir: dir, b: st[cut+g:]})
			}
		}
		// Deliver in segment-sized pieces.
		var seg []event
		for _, e := range ev {
			for len(e.b) > 1448 {
				seg = append(seg, event{dir: e.dir, b: e.b[:1448]})
				e.b = e.b[1448:]
			}
			seg = append(seg, e)
		}
		if only := os.Getenv("TAPLINE_RESYNC_ONLY"); only != "" && only != strconv.Itoa(it) {
			continue
		}
		col, _ := run(t, seg, message.Meta{ClientKnown: true, MidStream: midStream})
		got := dataMsgs(col.dir(dir))
		if os.Getenv("TAPLINE_RESYNC_DEBUG") != "" {
			t.Logf("it %d: midstream %v masked %v cut %d len %d", it, midStream, masked, cut, len(st))
		}
		lost := checkNoGarbage(t, got, msgs)
		if len(lost) > len(msgs)/2+10 { // the cut is in the first half
			t.Errorf("it %d: lost %d of %d messages", it, len(lost), len(msgs))
		}
	}
}
