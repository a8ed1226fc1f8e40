// Package replaytest builds the entries of the messages stream
// (TAPLINE_MSGS) exactly as the wire contract in proto/README.md describes
// them — data chunks of at most proto.MaxChunk bytes with proto.Chunk
// headers, and open/gap/close connection events — so tests of any consumer
// can publish realistic traffic without running reassemble.
package replaytest

import (
	"context"
	"fmt"
	"iter"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// Message is one message of one direction of a connection.
type Message struct {
	Conn   string
	VNI    uint32
	Shard  int
	Client string // ip:port
	Server string // ip:port
	Dir    proto.Direction
	Seq    uint64 // from 1 within connection and direction
	Opcode string // proto.OpText, OpBinary, OpPing, OpClose, OpTCP ...

	// Payload is the decoded payload. For large generated payloads leave it
	// nil and set Size and Fill instead.
	Payload []byte
	// Size is the payload size when Payload is nil.
	Size int64
	// Fill writes the payload bytes at offset off into p (len(p) bytes).
	Fill func(off int64, p []byte)

	// Incomplete marks the message as touched by mirror loss: chunks with
	// index >= LossAtChunk carry Tapline-Complete: false.
	Incomplete  bool
	LossAtChunk int
	Missing     int64 // Tapline-Missing on the last chunk

	Compressed bool
	CloseCode  int
	FirstNs    int64
	LastNs     int64 // 0: FirstNs
	// ChunkSize splits the payload; 0 means proto.MaxChunk.
	ChunkSize int
}

// Len is the payload length.
func (m *Message) Len() int64 {
	if m.Payload != nil {
		return int64(len(m.Payload))
	}
	return m.Size
}

// Chunks yields the NATS messages of the data chunks of m, in order, on
// proto.MsgsSubject(m.VNI, m.Shard). A message of n bytes has
// max(1, ceil(n/chunk)) chunks; the body of each is generated only when it
// is yielded, so a 100 MB message never sits in memory whole.
func (m *Message) Chunks() iter.Seq[*nats.Msg] {
	return func(yield func(*nats.Msg) bool) {
		size := m.ChunkSize
		if size <= 0 || size > proto.MaxChunk {
			size = proto.MaxChunk
		}
		total := m.Len()
		n := int((total + int64(size) - 1) / int64(size))
		if n == 0 {
			n = 1
		}
		last := m.LastNs
		if last == 0 {
			last = m.FirstNs
		}
		for i := 0; i < n; i++ {
			off := int64(i) * int64(size)
			end := min(off+int64(size), total)
			var body []byte
			if m.Payload != nil {
				body = m.Payload[off:end]
			} else if end > off {
				body = make([]byte, end-off)
				m.Fill(off, body)
			}
			c := proto.Chunk{
				Conn: m.Conn, VNI: m.VNI, Client: m.Client, Server: m.Server,
				Dir: m.Dir, Seq: m.Seq, Index: i, Last: i == n-1,
				Opcode:     m.Opcode,
				Complete:   !(m.Incomplete && i >= m.LossAtChunk),
				Compressed: m.Compressed, CloseCode: m.CloseCode,
				FirstNs: m.FirstNs, LastNs: last,
			}
			if c.Last {
				c.Size = total
				c.Missing = m.Missing
			}
			msg := nats.NewMsg(proto.MsgsSubject(m.VNI, m.Shard))
			msg.Header = c.Header()
			msg.Data = body
			if !yield(msg) {
				return
			}
		}
	}
}

// Open returns the open event of a connection on the messages subject of
// vni and shard.
func Open(shard int, ev proto.OpenEvent) *nats.Msg {
	m, err := proto.EventMsg(proto.MsgsSubject(ev.VNI, shard), proto.KindOpen, ev.Conn, ev.VNI, ev.Conn+"/open", ev)
	if err != nil {
		panic(err) // the event types always marshal
	}
	return m
}

// Gap returns a gap event.
func Gap(vni uint32, shard int, ev proto.GapEvent) *nats.Msg {
	m, err := proto.EventMsg(proto.MsgsSubject(vni, shard), proto.KindGap, ev.Conn, vni, fmt.Sprintf("%s/gap/%s/%d", ev.Conn, ev.Dir, ev.Offset), ev)
	if err != nil {
		panic(err)
	}
	return m
}

// Close returns the close event of a connection.
func Close(vni uint32, shard int, ev proto.CloseEvent) *nats.Msg {
	m, err := proto.EventMsg(proto.MsgsSubject(vni, shard), proto.KindClose, ev.Conn, vni, ev.Conn+"/close", ev)
	if err != nil {
		panic(err)
	}
	return m
}

// DefaultWindow is how many publishes a Publisher lets await their
// acknowledgement at once when Window is 0. It stays well below the
// JetStream client's default limit of pending asynchronous publishes
// (4000) and below the 256 the tests' clients set, so a publisher never
// stalls the client, even with another call's window still pending.
const DefaultWindow = 64

// Publisher publishes entries to JetStream asynchronously, keeping at most
// Window of them awaiting their acknowledgement within one call: before
// publishing more it waits for the oldest one's acknowledgement, and a
// publish JetStream refused is returned as an error.
type Publisher struct {
	JS jetstream.JetStream
	// Window bounds the publishes awaiting acknowledgement (0: DefaultWindow).
	Window int
}

// window tracks the outstanding publishes of one call.
type window struct {
	max  int
	futs []jetstream.PubAckFuture
}

// add publishes m once fewer than max publishes await acknowledgement.
func (w *window) add(ctx context.Context, js jetstream.JetStream, m *nats.Msg) error {
	for len(w.futs) >= w.max {
		if err := w.waitOldest(ctx); err != nil {
			return err
		}
	}
	f, err := js.PublishMsgAsync(m)
	if err != nil {
		return err
	}
	w.futs = append(w.futs, f)
	return nil
}

func (w *window) waitOldest(ctx context.Context) error {
	f := w.futs[0]
	w.futs[0] = nil
	w.futs = w.futs[1:]
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return fmt.Errorf("replaytest: publish to %s: %w", f.Msg().Subject, err)
	case <-ctx.Done():
		return fmt.Errorf("replaytest: publish not acknowledged: %w", ctx.Err())
	}
}

// drain waits for every publish of the call.
func (w *window) drain(ctx context.Context) error {
	for len(w.futs) > 0 {
		if err := w.waitOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (p Publisher) window() *window {
	n := p.Window
	if n <= 0 {
		n = DefaultWindow
	}
	return &window{max: n}
}

// Publish publishes msgs in order and waits for every acknowledgement.
func (p Publisher) Publish(ctx context.Context, msgs ...*nats.Msg) error {
	w := p.window()
	for _, m := range msgs {
		if err := w.add(ctx, p.JS, m); err != nil {
			return err
		}
	}
	if err := w.drain(ctx); err != nil {
		return err
	}
	return p.Wait(ctx)
}

// PublishMessage publishes every chunk of m; at most Window of them are
// left awaiting their acknowledgement when it returns (Wait waits for them).
func (p Publisher) PublishMessage(ctx context.Context, m *Message) error {
	w := p.window()
	for c := range m.Chunks() {
		if err := w.add(ctx, p.JS, c); err != nil {
			return err
		}
	}
	return nil
}

// Wait waits until every asynchronous publish was acknowledged.
func (p Publisher) Wait(ctx context.Context) error {
	select {
	case <-p.JS.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("replaytest: publish not acknowledged: %w", ctx.Err())
	}
}

// Gen returns a Fill function producing a deterministic pseudo-random
// payload for seed: the same (seed, offset) always gives the same bytes.
// Offsets passed to it must be multiples of 8.
func Gen(seed uint64) func(off int64, p []byte) {
	return func(off int64, p []byte) {
		// One 8-byte word per position keeps any offset reproducible.
		var w [8]byte
		for i := 0; i < len(p); i += 8 {
			x := splitmix(seed ^ uint64(off+int64(i)))
			for k := range 8 {
				w[k] = byte(x >> (8 * k))
			}
			copy(p[i:], w[:])
		}
	}
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// RandomBytes returns n pseudo-random bytes from r.
func RandomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Ns converts a time to ns since the epoch, for FirstNs fields.
func Ns(t time.Time) int64 { return t.UnixNano() }
