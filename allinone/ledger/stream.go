package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
)

// StreamMsg is one message of TAPLINE_MSGS, its chunks joined: its
// completeness is that of its last chunk.
type StreamMsg struct {
	Conn     string
	Dir      proto.Direction
	Seq      uint64
	Opcode   string
	Complete bool
	Reason   string // Tapline-Reason of an incomplete message
	Missing  int64
	Size     int64 // bytes of the body (all chunks)
	SHA256   string
	Chunks   int
	// Pos is the stream position of the last chunk (entries counted from
	// 0 in the order given to Add).
	Pos int
}

// Msg is the message's content identity.
func (m StreamMsg) Msg() Msg { return Msg{Opcode: m.Opcode, Size: m.Size, SHA256: m.SHA256} }

// event is a connection event in stream order.
type event struct {
	pos   int
	open  *proto.OpenEvent
	gap   *proto.GapEvent
	close *proto.CloseEvent
}

type partial struct {
	h      hash.Hash
	n      int64
	chunks int
	next   int
	// ahead holds chunks stored before an earlier one of their message
	// (a publish resent after its acknowledgement was lost), at most
	// proto.ReorderChunks-1 of them, as the wire contract allows.
	ahead map[int]heldChunk
}

type heldChunk struct {
	c    proto.Chunk
	body []byte
}

// Stream gathers the entries of TAPLINE_MSGS (in stream order) into
// messages and events. The zero value is not usable; call NewStream.
type Stream struct {
	pos      int
	msgs     []StreamMsg
	events   []event
	keys     map[string]Key // conn id -> addresses
	open     map[string]*partial
	problems []Violation
}

// NewStream returns an empty Stream.
func NewStream() *Stream {
	return &Stream{keys: map[string]Key{}, open: map[string]*partial{}}
}

// Add takes the next entry of the messages stream: its NATS headers and
// body. seq is its stream sequence (for messages only). A chunk out of
// order within its message, or a malformed entry, is recorded as a
// violation of the wire contract and returned.
func (s *Stream) Add(h nats.Header, body []byte, seq uint64) error {
	pos := s.pos
	s.pos++
	e, err := ParseEntry(h, body)
	if err == nil {
		switch {
		case e.Kind == proto.KindData:
			err = s.addChunk(e.Chunk, body, pos)
		case e.Open != nil:
			s.keys[e.Open.Conn] = Key{Client: e.Open.Client, Server: e.Open.Server}
			s.events = append(s.events, event{pos: pos, open: e.Open})
		case e.Gap != nil:
			s.events = append(s.events, event{pos: pos, gap: e.Gap})
		case e.Close != nil:
			s.events = append(s.events, event{pos: pos, close: e.Close})
		}
	}
	if err != nil {
		err = fmt.Errorf("ledger: stream seq %d: %w", seq, err)
		s.problems = append(s.problems, Violation{Class: ClassWire, Detail: err.Error(), Index: -1})
	}
	return err
}

func (s *Stream) addChunk(c proto.Chunk, body []byte, pos int) error {
	if _, ok := s.keys[c.Conn]; !ok && c.Client != "" {
		s.keys[c.Conn] = Key{Client: c.Client, Server: c.Server}
	}
	id := fmt.Sprintf("%s/%s/%d", c.Conn, c.Dir, c.Seq)
	p := s.open[id]
	if p == nil {
		p = &partial{h: sha256.New()}
		s.open[id] = p
	}
	if c.Index > p.next {
		if _, dup := p.ahead[c.Index]; dup || len(p.ahead) >= proto.ReorderChunks-1 {
			return fmt.Errorf("message %s: chunk %d, want %d (%d chunks already ahead of it)", id, c.Index, p.next, len(p.ahead))
		}
		if p.ahead == nil {
			p.ahead = map[int]heldChunk{}
		}
		p.ahead[c.Index] = heldChunk{c: c, body: append([]byte(nil), body...)}
		return nil
	}
	if c.Index != p.next {
		return fmt.Errorf("message %s: chunk %d, want %d", id, c.Index, p.next)
	}
	for {
		if err := s.takeChunk(id, p, c, body, pos); err != nil || c.Last {
			return err
		}
		h, ok := p.ahead[p.next]
		if !ok {
			return nil
		}
		delete(p.ahead, p.next)
		c, body = h.c, h.body
	}
}

// takeChunk adds the next chunk of message id, in order.
func (s *Stream) takeChunk(id string, p *partial, c proto.Chunk, body []byte, pos int) error {
	p.next++
	p.chunks++
	p.h.Write(body)
	p.n += int64(len(body))
	if !c.Last {
		return nil
	}
	delete(s.open, id)
	m := StreamMsg{Conn: c.Conn, Dir: c.Dir, Seq: c.Seq, Opcode: c.Opcode, Complete: c.Complete,
		Reason: c.Reason, Missing: c.Missing, Size: p.n, SHA256: hex.EncodeToString(p.h.Sum(nil)),
		Chunks: p.chunks, Pos: pos}
	if c.Size != p.n {
		s.problems = append(s.problems, Violation{Class: ClassWire, Dir: c.Dir, Index: -1,
			Detail: fmt.Sprintf("message %s: Tapline-Size %d but the chunks hold %d bytes", id, c.Size, p.n)})
	}
	if !c.Complete && c.Reason == "" {
		s.problems = append(s.problems, Violation{Class: ClassWire, Dir: c.Dir, Index: -1,
			Detail: fmt.Sprintf("message %s: incomplete without %s", id, proto.HdrReason)})
	}
	s.msgs = append(s.msgs, m)
	return nil
}

// Messages returns the messages whose last chunk was added, in stream
// order.
func (s *Stream) Messages() []StreamMsg { return s.msgs }

// Closes returns the close events, in stream order.
func (s *Stream) Closes() []*proto.CloseEvent {
	var out []*proto.CloseEvent
	for _, e := range s.events {
		if e.close != nil {
			out = append(out, e.close)
		}
	}
	return out
}

// Gaps returns the gap events, in stream order.
func (s *Stream) Gaps() []*proto.GapEvent {
	var out []*proto.GapEvent
	for _, e := range s.events {
		if e.gap != nil {
			out = append(out, e.gap)
		}
	}
	return out
}

// Opens returns the open events, in stream order.
func (s *Stream) Opens() []*proto.OpenEvent {
	var out []*proto.OpenEvent
	for _, e := range s.events {
		if e.open != nil {
			out = append(out, e.open)
		}
	}
	return out
}

// KeyOf returns the addresses of a connection id (from its open event or
// its chunks' headers).
func (s *Stream) KeyOf(conn string) (Key, bool) {
	k, ok := s.keys[conn]
	return k, ok
}

// Pending is the number of messages whose last chunk has not been added.
func (s *Stream) Pending() int { return len(s.open) }

// Entries is the number of entries added.
func (s *Stream) Entries() int { return s.pos }
