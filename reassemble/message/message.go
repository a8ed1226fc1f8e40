// Package message turns the two reassembled byte streams of one TCP
// connection into messages: WebSocket messages (RFC 6455, with
// permessage-deflate of RFC 7692) when the connection is a WebSocket, and
// runs of raw bytes otherwise. It never guesses over lost bytes: a message
// touched by a gap is emitted with Complete=false and its missing byte
// count, and decoding resumes at the next recoverable frame boundary.
//
// The TCP layer (package tcp) drives a Decoder with in-order Data and Gap
// calls per direction; the Decoder reports through an Output.
package message

import (
	"github.com/tapline/tapline/proto"
)

// Meta identifies the connection a Decoder works on.
type Meta struct {
	Conn   string // connection id (proto.HdrConn)
	VNI    uint32
	Client string // ip:port of the client side
	Server string // ip:port of the server side
	// ClientKnown is true when the TCP layer saw the SYN, so Client and
	// Server are certain; otherwise they are a guess (lower port is the
	// server) that the decoder may correct from what it sees (an HTTP
	// request, a 101 response, masked frames).
	ClientKnown bool
	// MidStream is true when the connection's start (SYN or first bytes)
	// was not seen: mirroring started after the connection opened.
	MidStream bool
	// Resume, when set, is the closed connection this one continues (see
	// Resume and Snapshot).
	Resume *Resume
}

// Output receives what a Decoder produces, in order.
type Output interface {
	// Open reports the connection once its protocol is known (after the
	// WebSocket handshake, or when the decoder settles on raw TCP or on a
	// mid-stream WebSocket).
	Open(ev *proto.OpenEvent)
	// Chunk reports one chunk of a message, at most proto.MaxChunk bytes.
	// body is only valid during the call.
	Chunk(c *proto.Chunk, body []byte)
	// SwapDirections is called when the decoder learns that the guessed
	// client and server are the other way round; the caller swaps Meta's
	// Client and Server for later chunks and events and inverts the
	// direction it passes to Data and Gap.
	SwapDirections()
}

// Limits bound a Decoder's memory.
type Limits struct {
	// MaxHeader is the largest HTTP upgrade request or response header
	// block held while waiting for its end (default 64 KiB).
	MaxHeader int
	// MaxControl is the largest control frame payload accepted (RFC 6455:
	// 125); larger ones are counted as bad frames.
	MaxControl int
	// MaxMessage is the largest message (inflated) a Decoder will emit;
	// past it the message is cut, flagged incomplete and counted (default
	// 1 GiB). Memory does not depend on it: messages are streamed as chunks.
	MaxMessage int64
	// MaxInflation bounds decompression amplification: a compressed
	// message is cut and flagged (proto.ReasonInflationLimit) once it has
	// inflated past InflationFree bytes and past MaxInflation times the
	// compressed bytes it took so far. 0: no limit.
	MaxInflation int
}

// InflationFree is how far any compressed message may inflate before
// Limits.MaxInflation applies: small, highly repetitive messages (a few
// bytes of back-reference under context takeover) inflate far beyond any
// sane ratio and are harmless.
const InflationFree = 1 << 20

// Stats counts what a Decoder did in one direction, for the connection's
// loss summary and the metrics.
type Stats struct {
	// MessagesComplete and MessagesIncomplete count the data messages
	// emitted (text, binary, tcp); control frames are in ControlFrames.
	MessagesComplete   int64
	MessagesIncomplete int64
	// ControlFrames counts the control frames emitted (ping, pong,
	// close), ControlIncomplete those of them flagged incomplete.
	ControlFrames     int64
	ControlIncomplete int64
	Undecodable       int64 // e.g. compressed without its negotiated context
	BadFrames         int64 // protocol violations (oversized control frame, unknown opcode, 2^63 length)
	// MessagesLost counts messages whose start the decoder saw but that it
	// could not emit: frames skipped as bad (unknown opcode, a control
	// frame too large or not final), a header cut by a gap or the
	// connection's end, and frames given up while resynchronising (see
	// README: one of those may rarely be a false header). Messages whose
	// header was lost entirely are accounted by the gap's bytes only.
	MessagesLost int64
	Resyncs      int64 // times the parser searched for a frame boundary
}

// Decoder is the per-connection decoder. It is not safe for concurrent use.
type Decoder interface {
	// Data delivers in-order stream bytes of one direction, captured at
	// tsNs. b is only valid during the call.
	Data(dir proto.Direction, b []byte, tsNs int64)
	// Gap reports that n bytes of dir were lost at this point of the
	// stream (known from TCP sequence numbers).
	Gap(dir proto.Direction, n int64, tsNs int64)
	// Close ends the connection: a partly received message is emitted as
	// incomplete.
	Close(tsNs int64)
	// Stats reports the counts for one direction.
	Stats(dir proto.Direction) Stats
}
