// Package vxlan decodes and encodes the VXLAN header (RFC 7348).
//
// A VXLAN header is 8 bytes: a flags byte whose I bit (0x08) says the VNI is
// valid, 24 reserved bits, the 24-bit VNI and 8 more reserved bits. The
// decoder requires the I bit and accepts any other bit set (Linux lets users
// define the reserved bits, and some senders set them), reporting that they
// were set so callers can count it. It never allocates.
package vxlan

import (
	"encoding/binary"
	"errors"
)

// HeaderLen is the length of a VXLAN header.
const HeaderLen = 8

// FlagI is the "VNI valid" flag, the one flag RFC 7348 defines.
const FlagI = 0x08

// Port is the IANA UDP port of VXLAN.
const Port = 4789

// Errors returned by Parse.
var (
	ErrShort = errors.New("vxlan: shorter than the 8-byte header")
	ErrFlags = errors.New("vxlan: I flag (0x08) not set")
)

// Header is a decoded VXLAN header.
type Header struct {
	// Flags is the first byte as received.
	Flags uint8
	// VNI is the 24-bit virtual network identifier.
	VNI uint32
	// Reserved is true when any bit other than the I flag is set (flags,
	// or either reserved field).
	Reserved bool
}

// Parse decodes the VXLAN header at the start of b and returns it with the
// encapsulated frame (an Ethernet frame), which aliases b.
func Parse(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, nil, ErrShort
	}
	h.Flags = b[0]
	if h.Flags&FlagI == 0 {
		return h, nil, ErrFlags
	}
	h.VNI = uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6])
	h.Reserved = h.Flags != FlagI || b[1]|b[2]|b[3]|b[7] != 0
	return h, b[HeaderLen:], nil
}

// Append appends a VXLAN header for vni the way AWS Traffic Mirroring writes
// it (flags 0x08, reserved bits zero) to dst.
func Append(dst []byte, vni uint32) []byte {
	var h [HeaderLen]byte
	h[0] = FlagI
	binary.BigEndian.PutUint32(h[4:8], vni<<8)
	return append(dst, h[:]...)
}
