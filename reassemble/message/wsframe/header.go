// Package wsframe parses RFC 6455 WebSocket frame headers and unmasks
// payloads. It holds no state: the caller keeps the position in a frame.
package wsframe

import (
	"encoding/binary"
	"errors"
)

// Opcodes of RFC 6455 section 5.2.
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// MaxHeader is the largest frame header: 2 + 8 (length) + 4 (mask key).
const MaxHeader = 14

// Errors returned by Parse.
var (
	// ErrShort means b holds only part of a header; call again with more bytes.
	ErrShort = errors.New("wsframe: short header")
	// ErrLength means the 64-bit length has its most significant bit set,
	// which RFC 6455 forbids.
	ErrLength = errors.New("wsframe: 64-bit length with the top bit set")
)

// Header is a parsed frame header.
type Header struct {
	Fin    bool
	Rsv    uint8 // RSV1..RSV3 as bits 2..0 (RSV1 = 4)
	Opcode uint8
	Masked bool
	Key    [4]byte
	Length uint64
	// NonMinimal is true when the length was not encoded in the fewest
	// bytes (RFC 6455 requires minimal encoding; senders follow it).
	NonMinimal bool
}

// RSV1 is the Rsv bit used by permessage-deflate.
const RSV1 = 4

// Parse reads a frame header from the start of b and returns it with its
// encoded size. It returns ErrShort when b is too short to hold the whole
// header and ErrLength for a length with the top bit set.
func Parse(b []byte) (h Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, ErrShort
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 7
	h.Opcode = b[0] & 0x0f
	h.Masked = b[1]&0x80 != 0
	l7 := b[1] & 0x7f
	n = 2
	switch l7 {
	case 126:
		if len(b) < 4 {
			return h, 0, ErrShort
		}
		h.Length = uint64(binary.BigEndian.Uint16(b[2:4]))
		h.NonMinimal = h.Length < 126
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, ErrShort
		}
		h.Length = binary.BigEndian.Uint64(b[2:10])
		if h.Length>>63 != 0 {
			return h, 10, ErrLength
		}
		h.NonMinimal = h.Length < 1<<16
		n = 10
	default:
		h.Length = uint64(l7)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, ErrShort
		}
		copy(h.Key[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// Size reports how many header bytes b's first two bytes announce (2..14),
// or 0 when b is shorter than 2 bytes.
func Size(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	n := 2
	switch b[1] & 0x7f {
	case 126:
		n = 4
	case 127:
		n = 10
	}
	if b[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// IsControl reports whether op is a control opcode (close, ping, pong or
// a reserved control opcode).
func IsControl(op uint8) bool { return op&0x8 != 0 }

// Known reports whether op is one of the six opcodes RFC 6455 defines.
func Known(op uint8) bool {
	switch op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
		return true
	}
	return false
}

// Append encodes h in front of nothing and returns dst with the header
// appended (used by tests and tools to build frames).
func Append(dst []byte, h Header) []byte {
	b0 := h.Opcode&0x0f | h.Rsv<<4
	if h.Fin {
		b0 |= 0x80
	}
	var m byte
	if h.Masked {
		m = 0x80
	}
	switch {
	case h.Length < 126:
		dst = append(dst, b0, m|byte(h.Length))
	case h.Length < 1<<16:
		dst = append(dst, b0, m|126, byte(h.Length>>8), byte(h.Length))
	default:
		dst = append(dst, b0, m|127)
		dst = binary.BigEndian.AppendUint64(dst, h.Length)
	}
	if h.Masked {
		dst = append(dst, h.Key[:]...)
	}
	return dst
}
