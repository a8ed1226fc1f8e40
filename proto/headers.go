package proto

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// NATS header names used on the messages stream (and, where they apply, on
// the results stream). All values are ASCII; numbers are decimal.
const (
	HdrVersion    = "Tapline-Version"    // wire contract revision, see Version
	HdrKind       = "Tapline-Kind"       // one of the Kind values
	HdrConn       = "Tapline-Conn"       // connection id, stable for the connection's life
	HdrVNI        = "Tapline-Vni"        // VNI the connection was mirrored on
	HdrClient     = "Tapline-Client"     // client address ip:port (the side that opened the connection, or the guess)
	HdrServer     = "Tapline-Server"     // server address ip:port
	HdrDir        = "Tapline-Dir"        // c2s or s2c
	HdrSeq        = "Tapline-Seq"        // message sequence within connection and direction, from 1
	HdrChunk      = "Tapline-Chunk"      // chunk index within the message, from 0
	HdrLast       = "Tapline-Last"       // "true" on the last chunk of a message
	HdrOpcode     = "Tapline-Opcode"     // text, binary, ping, pong, close, or tcp for raw TCP bytes
	HdrComplete   = "Tapline-Complete"   // "true" when the message is byte-exact; "false" when touched by loss
	HdrMissing    = "Tapline-Missing"    // bytes of the message lost by the mirror (known at the last chunk)
	HdrCompressed = "Tapline-Compressed" // "true" when the frame was permessage-deflate compressed on the wire; the body is inflated
	HdrCloseCode  = "Tapline-Close-Code" // close status code of a close message, when present
	HdrFirstNs    = "Tapline-First-Ns"   // capture time of the first packet of the message (ns since the Unix epoch)
	HdrLastNs     = "Tapline-Last-Ns"    // capture time of the last packet of the message so far
	HdrSize       = "Tapline-Size"       // total payload bytes of the message, on the last chunk
	HdrWireSize   = "Tapline-Wire-Size"  // compressed payload bytes the message took on the wire, on the last chunk of a compressed message
	HdrResult     = "Tapline-Result"     // replay result: sent, skipped, failed, match, mismatch
	HdrReason     = "Tapline-Reason"     // human-readable reason accompanying a result or an incomplete message
	HdrMsgID      = nats.MsgIdHdr        // JetStream de-duplication id
)

// Kind is the value of the Tapline-Kind header.
type Kind string

// Kinds of entries on the messages subject.
const (
	KindData  Kind = "data"  // a chunk of a message (WebSocket message or raw TCP bytes)
	KindOpen  Kind = "open"  // a connection was seen; body is OpenEvent JSON
	KindGap   Kind = "gap"   // bytes were lost in one direction; body is GapEvent JSON
	KindClose Kind = "close" // a connection ended; body is CloseEvent JSON
)

// Direction of a message within its connection.
type Direction string

// Directions.
const (
	ClientToServer Direction = "c2s"
	ServerToClient Direction = "s2c"
)

// Opcode names used in the Tapline-Opcode header.
const (
	OpText   = "text"
	OpBinary = "binary"
	OpPing   = "ping"
	OpPong   = "pong"
	OpClose  = "close"
	OpTCP    = "tcp"
)

// DataOpcode reports whether op is a data message (text, binary, tcp):
// what an application receives, and what the close event's message counts
// count; ping, pong and close are control frames.
func DataOpcode(op string) bool {
	return op == OpText || op == OpBinary || op == OpTCP
}

// MaxChunk is the largest body of one chunk reassemble publishes (960
// KiB). A message larger than this is split into ordered chunks. With its
// headers (ChunkHeaderRoom) a full chunk stays under 1,000,000 bytes, so
// it fits a stock NATS server's max_payload (1 MB); until protocol 1's
// first release it was 1 MiB, which a stock server refuses with its
// headers. Subscribers accept chunks up to MaxChunkAccepted.
const MaxChunk = 960 << 10

// MaxChunkAccepted is the largest chunk body a subscriber accepts: the 1
// MiB earlier publishers wrote. Chunk size is the publisher's choice; it
// needs no version change.
const MaxChunkAccepted = 1 << 20

// ReorderChunks is how many chunks of one connection a subscriber keeps
// back while an earlier chunk of their message has not arrived. A
// publisher stores at most ReorderChunks-1 of a message's chunks ahead of
// an earlier one (a publish resent after its acknowledgement was lost),
// and never a message's first chunk or an event ahead of an earlier entry
// of the connection.
const ReorderChunks = 64

// Chunk is the metadata of one data chunk on the messages subject. Its body
// (the decoded payload bytes) travels as the NATS message data.
type Chunk struct {
	Conn       string
	VNI        uint32
	Client     string
	Server     string
	Dir        Direction
	Seq        uint64
	Index      int
	Last       bool
	Opcode     string
	Complete   bool
	Missing    int64
	Compressed bool
	CloseCode  int // 0 when absent
	FirstNs    int64
	LastNs     int64
	Size       int64 // set on the last chunk
	// WireSize is, on the last chunk of a compressed message, the
	// compressed payload bytes it took on the wire (Size / WireSize is its
	// inflation ratio); 0 otherwise.
	WireSize int64
	// Reason says why a message is incomplete (one of the Reason values);
	// empty for complete messages. Sent as Tapline-Reason.
	Reason string
}

// Why a message is flagged incomplete (the Tapline-Reason header of data
// chunks). The first cause that touched the message is reported.
const (
	ReasonGap         = "gap"         // bytes lost by the mirror (or by a reassembly bound)
	ReasonUndecodable = "undecodable" // compressed data whose inflate context was lost or never seen
	ReasonBadFrame    = "bad-frame"   // a protocol violation (e.g. RSV bits no extension explains, an oversized control frame)
	ReasonTooLarge    = "too-large"   // cut at the configured maximum message size
	ReasonCut         = "cut"         // the connection ended before the message did
	// ReasonInflationLimit: a compressed message inflated past
	// reassemble's --max-inflation-ratio (decompression amplification);
	// cut there like a too-large one.
	ReasonInflationLimit = "inflation-limit"
)

// MsgID is the JetStream de-duplication id of the chunk, so a chunk
// published again after a failover is stored once.
func (c *Chunk) MsgID() string {
	return fmt.Sprintf("%s/%s/%d/%d", c.Conn, c.Dir, c.Seq, c.Index)
}

// Header encodes the chunk metadata as NATS headers.
func (c *Chunk) Header() nats.Header {
	h := nats.Header{}
	h.Set(HdrVersion, Version)
	h.Set(HdrKind, string(KindData))
	h.Set(HdrConn, c.Conn)
	h.Set(HdrVNI, strconv.FormatUint(uint64(c.VNI), 10))
	h.Set(HdrClient, c.Client)
	h.Set(HdrServer, c.Server)
	h.Set(HdrDir, string(c.Dir))
	h.Set(HdrSeq, strconv.FormatUint(c.Seq, 10))
	h.Set(HdrChunk, strconv.Itoa(c.Index))
	h.Set(HdrLast, strconv.FormatBool(c.Last))
	h.Set(HdrOpcode, c.Opcode)
	h.Set(HdrComplete, strconv.FormatBool(c.Complete))
	h.Set(HdrMissing, strconv.FormatInt(c.Missing, 10))
	h.Set(HdrCompressed, strconv.FormatBool(c.Compressed))
	if c.CloseCode != 0 {
		h.Set(HdrCloseCode, strconv.Itoa(c.CloseCode))
	}
	h.Set(HdrFirstNs, strconv.FormatInt(c.FirstNs, 10))
	h.Set(HdrLastNs, strconv.FormatInt(c.LastNs, 10))
	if c.Last {
		h.Set(HdrSize, strconv.FormatInt(c.Size, 10))
	}
	if c.WireSize > 0 {
		h.Set(HdrWireSize, strconv.FormatInt(c.WireSize, 10))
	}
	if c.Reason != "" {
		h.Set(HdrReason, c.Reason)
	}
	h.Set(HdrMsgID, c.MsgID())
	return h
}

// ParseChunk decodes chunk metadata from NATS headers. It returns an error
// naming the first missing or malformed header.
func ParseChunk(h nats.Header) (Chunk, error) {
	var c Chunk
	var err error
	if k := Kind(h.Get(HdrKind)); k != KindData {
		return c, fmt.Errorf("proto: %s is %q, not %q", HdrKind, k, KindData)
	}
	p := headerParser{h: h}
	c.Conn = p.str(HdrConn, true)
	c.VNI = uint32(p.uint(HdrVNI, 32))
	c.Client = p.str(HdrClient, false)
	c.Server = p.str(HdrServer, false)
	c.Dir = Direction(p.str(HdrDir, true))
	c.Seq = p.uint(HdrSeq, 64)
	c.Index = int(p.uint(HdrChunk, 31))
	c.Last = p.bool(HdrLast)
	c.Opcode = p.str(HdrOpcode, true)
	c.Complete = p.bool(HdrComplete)
	c.Missing = p.int(HdrMissing, true)
	c.Compressed = p.bool(HdrCompressed)
	c.CloseCode = int(p.int(HdrCloseCode, false))
	c.FirstNs = p.int(HdrFirstNs, true)
	c.LastNs = p.int(HdrLastNs, true)
	if c.Last {
		c.Size = p.int(HdrSize, true)
		c.WireSize = p.int(HdrWireSize, false)
	}
	c.Reason = p.str(HdrReason, false)
	if p.err != nil {
		err = p.err
	} else if c.Dir != ClientToServer && c.Dir != ServerToClient {
		err = fmt.Errorf("proto: %s is %q, want c2s or s2c", HdrDir, c.Dir)
	}
	return c, err
}

// headerParser reads typed header values and keeps the first error.
type headerParser struct {
	h   nats.Header
	err error
}

func (p *headerParser) str(name string, required bool) string {
	v := p.h.Get(name)
	if v == "" && required && p.err == nil {
		p.err = fmt.Errorf("proto: header %s missing", name)
	}
	return v
}

func (p *headerParser) uint(name string, bits int) uint64 {
	v := p.str(name, true)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, bits)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("proto: header %s=%q: %w", name, v, err)
	}
	return n
}

func (p *headerParser) int(name string, required bool) int64 {
	v := p.str(name, required)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("proto: header %s=%q: %w", name, v, err)
	}
	return n
}

func (p *headerParser) bool(name string) bool {
	v := p.str(name, true)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("proto: header %s=%q: %w", name, v, err)
	}
	return b
}
