package message_test

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
)

// msg is one reassembled message as a consumer would rebuild it from the
// chunks.
type msg struct {
	Dir        proto.Direction
	Seq        uint64
	Opcode     string
	Complete   bool
	Missing    int64
	Reason     string
	Compressed bool
	CloseCode  int
	Size       int64
	WireSize   int64
	Body       []byte
	Sum        [32]byte
	Chunks     int
}

func (m *msg) sha1x8() string {
	s := sha1.Sum(m.Body)
	return hex.EncodeToString(s[:4])
}

// collector is an Output that rebuilds messages and checks the chunk
// stream's invariants.
type collector struct {
	t        testing.TB
	keepBody bool
	opens    []*proto.OpenEvent
	swaps    int
	msgs     []*msg
	open     map[string]*msg
	lastSeq  map[proto.Direction]uint64
	maxChunk int
	hashes   map[string]*sha256state
	chunks   int
}

type sha256state struct {
	h interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
}

func newCollector(t testing.TB) *collector {
	return &collector{t: t, keepBody: true, open: map[string]*msg{}, lastSeq: map[proto.Direction]uint64{}, hashes: map[string]*sha256state{}}
}

func (c *collector) Open(ev *proto.OpenEvent) {
	if len(c.opens) > 0 {
		c.t.Errorf("second open event %+v", ev)
	}
	if c.chunks > 0 {
		c.t.Errorf("open event after %d chunks", c.chunks)
	}
	c.opens = append(c.opens, ev)
}

func (c *collector) SwapDirections() { c.swaps++ }

func (c *collector) Chunk(ch *proto.Chunk, body []byte) {
	c.chunks++
	if len(body) > proto.MaxChunk {
		c.t.Fatalf("chunk of %d bytes", len(body))
	}
	if len(body) > c.maxChunk {
		c.maxChunk = len(body)
	}
	if ch.Conn == "" || ch.Dir == "" || ch.Opcode == "" {
		c.t.Fatalf("chunk without identity: %+v", ch)
	}
	key := fmt.Sprintf("%s/%d", ch.Dir, ch.Seq)
	m := c.open[key]
	if m == nil {
		if ch.Index != 0 {
			c.t.Fatalf("%s: first chunk has index %d", key, ch.Index)
		}
		if ch.Seq != c.lastSeq[ch.Dir]+1 {
			c.t.Fatalf("%s: seq after %d", key, c.lastSeq[ch.Dir])
		}
		c.lastSeq[ch.Dir] = ch.Seq
		m = &msg{Dir: ch.Dir, Seq: ch.Seq, Opcode: ch.Opcode}
		c.open[key] = m
		c.hashes[key] = &sha256state{h: sha256.New()}
	} else if ch.Index != m.Chunks {
		c.t.Fatalf("%s: chunk index %d, want %d", key, ch.Index, m.Chunks)
	}
	if ch.Opcode != m.Opcode {
		c.t.Fatalf("%s: opcode changed %s -> %s", key, m.Opcode, ch.Opcode)
	}
	m.Chunks++
	if c.keepBody {
		m.Body = append(m.Body, body...)
	}
	c.hashes[key].h.Write(body)
	m.Size += 0
	if ch.Last {
		if ch.Complete != (ch.Reason == "") {
			c.t.Fatalf("%s: complete %v with reason %q", key, ch.Complete, ch.Reason)
		}
		delete(c.open, key)
		m.Complete = ch.Complete
		m.Missing = ch.Missing
		m.Reason = ch.Reason
		m.Compressed = ch.Compressed
		m.CloseCode = ch.CloseCode
		m.Size = ch.Size
		m.WireSize = ch.WireSize
		copy(m.Sum[:], c.hashes[key].h.Sum(nil))
		delete(c.hashes, key)
		if c.keepBody && int64(len(m.Body)) != ch.Size {
			c.t.Fatalf("%s: size %d, body %d", key, ch.Size, len(m.Body))
		}
		if ch.Complete && ch.Missing != 0 {
			c.t.Fatalf("%s: complete with missing %d", key, ch.Missing)
		}
		c.msgs = append(c.msgs, m)
	}
}

func (c *collector) dir(d proto.Direction) []*msg {
	var out []*msg
	for _, m := range c.msgs {
		if m.Dir == d {
			out = append(out, m)
		}
	}
	return out
}

var _ message.Output = (*collector)(nil)
