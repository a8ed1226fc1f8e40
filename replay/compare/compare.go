package compare

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
)

// Message is one side's message as the comparer keeps it: the payload up to
// the comparer's byte cap, and the length and SHA-256 of the whole payload.
type Message struct {
	Seq      uint64 // production sequence (expected side); 0 for responses
	Opcode   string // text, binary (or tcp)
	Size     int64
	SHA256   [32]byte
	Payload  []byte // nil when Size exceeds the cap
	Complete bool   // the production copy is byte-exact (expected side)
}

// Digest returns the hex SHA-256.
func (m *Message) Digest() string { return hex.EncodeToString(m.SHA256[:]) }

// Builder accumulates a message chunk by chunk, keeping at most max bytes.
type Builder struct {
	msg Message
	max int
	h   interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	buf  []byte
	over bool
}

// NewBuilder starts a message; payload bytes beyond max are only hashed.
func NewBuilder(seq uint64, opcode string, max int) *Builder {
	return &Builder{msg: Message{Seq: seq, Opcode: opcode, Complete: true}, max: max, h: sha256.New()}
}

// Write adds payload bytes.
func (b *Builder) Write(p []byte) (int, error) {
	b.h.Write(p)
	b.msg.Size += int64(len(p))
	if !b.over {
		if len(b.buf)+len(p) > b.max {
			b.over, b.buf = true, nil
		} else {
			b.buf = append(b.buf, p...)
		}
	}
	return len(p), nil
}

// Incomplete marks the message as not byte-exact.
func (b *Builder) Incomplete() { b.msg.Complete = false }

// Done returns the message.
func (b *Builder) Done() Message {
	copy(b.msg.SHA256[:], b.h.Sum(nil))
	if !b.over {
		b.msg.Payload = b.buf
		if b.msg.Payload == nil {
			b.msg.Payload = []byte{}
		}
	}
	return b.msg
}

// Outcome is the verdict on one pair (or an unpaired message).
type Outcome struct {
	Seq      uint64 // production sequence; 0 for an unexpected extra response
	Index    int    // position of the pair within the connection, from 1
	Match    bool
	Skipped  bool // the production message was incomplete: not compared
	Reason   string
	Expected *Message
	Got      *Message
}

// Conn pairs the production responses of one connection with the test
// system's responses, in order. It is safe for concurrent use: the
// expected side and the received side are usually fed by different
// goroutines.
type Conn struct {
	rules  Rules
	report func(Outcome)

	mu        sync.Mutex
	expected  []Message
	got       []Message
	index     int
	matched   int
	mismatchN int
	skipped   int
	finished  bool
}

// NewConn returns a comparer that calls report for every outcome.
func NewConn(rules Rules, report func(Outcome)) *Conn {
	return &Conn{rules: rules, report: report}
}

// Expect adds the next production response.
func (c *Conn) Expect(m Message) { c.add(&c.expected, m) }

// Got adds the next response of the test system.
func (c *Conn) Got(m Message) { c.add(&c.got, m) }

func (c *Conn) add(q *[]Message, m Message) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	*q = append(*q, m)
	var out []Outcome
	for len(c.expected) > 0 && len(c.got) > 0 {
		e, g := c.expected[0], c.got[0]
		c.expected, c.got = c.expected[1:], c.got[1:]
		out = append(out, c.judge(&e, &g))
	}
	c.mu.Unlock()
	for _, o := range out {
		c.report(o)
	}
}

func (c *Conn) judge(e, g *Message) Outcome {
	c.index++
	o := Outcome{Seq: e.Seq, Index: c.index, Expected: e, Got: g}
	switch {
	case !e.Complete:
		o.Skipped, o.Reason = true, "production message incomplete: not compared"
		c.skipped++
		return o
	case e.Opcode != g.Opcode:
		o.Reason = fmt.Sprintf("type differs: production %s, test %s", e.Opcode, g.Opcode)
	case e.Payload != nil && g.Payload != nil:
		ep, gp := e.Payload, g.Payload
		if !c.rules.Empty() {
			ep, gp = c.rules.Normalize(ep), c.rules.Normalize(gp)
		}
		if bytes.Equal(ep, gp) {
			o.Match = true
		} else {
			o.Reason = diffReason(ep, gp)
		}
	default:
		if e.Size == g.Size && e.SHA256 == g.SHA256 {
			o.Match = true
		} else {
			o.Reason = fmt.Sprintf("large payload differs: production %d bytes sha256 %.16s, test %d bytes sha256 %.16s", e.Size, e.Digest(), g.Size, g.Digest())
		}
	}
	if o.Match {
		c.matched++
	} else {
		c.mismatchN++
	}
	return o
}

func diffReason(a, b []byte) string {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	if i == n {
		return fmt.Sprintf("length differs: production %d bytes, test %d bytes (after ignore rules)", len(a), len(b))
	}
	return fmt.Sprintf("differs at byte %d: production %q, test %q (after ignore rules)", i, snippet(a, i), snippet(b, i))
}

func snippet(p []byte, i int) []byte {
	return p[i:min(len(p), i+24)]
}

// Summary counts the outcomes of a connection.
type Summary struct {
	Compared   int `json:"compared"`
	Matched    int `json:"matched"`
	Mismatched int `json:"mismatched"`
	Skipped    int `json:"skipped"`
	Missing    int `json:"missing_responses"`
	Extra      int `json:"extra_responses"`
}

// Finish reports every unpaired message (a production response the test
// system never sent, or a response production never sent) as a mismatch
// and returns the connection's summary. Later Expect/Got calls are ignored.
func (c *Conn) Finish() Summary {
	c.mu.Lock()
	var out []Outcome
	s := Summary{}
	for i := range c.expected {
		e := c.expected[i]
		c.index++
		if !e.Complete {
			c.skipped++
			out = append(out, Outcome{Seq: e.Seq, Index: c.index, Skipped: true, Expected: &e, Reason: "production message incomplete and no response"})
			continue
		}
		s.Missing++
		c.mismatchN++
		out = append(out, Outcome{Seq: e.Seq, Index: c.index, Expected: &e, Reason: "no response from the test system"})
	}
	for i := range c.got {
		g := c.got[i]
		c.index++
		s.Extra++
		c.mismatchN++
		out = append(out, Outcome{Index: c.index, Got: &g, Reason: "response production did not send"})
	}
	c.expected, c.got, c.finished = nil, nil, true
	s.Matched, s.Mismatched, s.Skipped = c.matched, c.mismatchN, c.skipped
	s.Compared = s.Matched + s.Mismatched
	c.mu.Unlock()
	for _, o := range out {
		c.report(o)
	}
	return s
}
