// Package flow parses just enough of an inner frame to name its flow: the
// IP addresses, the transport protocol and ports, and the fragment fields.
// It defines the symmetric flow hash that assigns a frame to a shard, so both
// directions of a TCP connection land on the same shard.
//
// The parser is allocation-free and handles Ethernet (with any number of
// 802.1Q/802.1ad tags) and raw IPv4/IPv6 frames.
package flow

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// LinkType is the link layer of a frame, with the values of the pcap
// LINKTYPE registry.
type LinkType uint16

// Link types Tapline produces.
const (
	LinkEthernet LinkType = 1   // LINKTYPE_ETHERNET
	LinkRaw      LinkType = 101 // LINKTYPE_RAW: starts with an IPv4 or IPv6 header
)

// IP protocol numbers.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Errors returned by Parse. A frame that is not IP is not an error of the
// frame: it has no flow (ErrNotIP) and goes to shard 0.
var (
	ErrNotIP     = errors.New("flow: not an IP packet")
	ErrShort     = errors.New("flow: frame too short for its headers")
	ErrBadHeader = errors.New("flow: malformed IP header")
)

// Key is the flow of one frame.
type Key struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // zero for protocols without ports and for non-first fragments
	Proto            uint8

	// L3Offset is where the IP header starts in the frame; L4Offset where
	// the transport header starts (0 for non-first fragments).
	L3Offset, L4Offset int
	// IPTotalLen is the length of the IP packet according to its header
	// (IPv4 total length, or IPv6 payload length + 40). When it exceeds the
	// captured bytes after L3Offset the frame was truncated.
	IPTotalLen int

	// Fragment fields. Fragment is true when the packet is part of a
	// fragmented datagram (more-fragments set or a non-zero offset).
	Fragment   bool
	FragID     uint32
	FragOffset int // in bytes
}

// Truncated reports whether the captured frame of length capLen holds fewer
// bytes than the IP header says the packet has.
func (k *Key) Truncated(capLen int) bool {
	return k.IPTotalLen > capLen-k.L3Offset
}

// Parse reads the flow of a frame of the given link type.
func Parse(lt LinkType, b []byte) (Key, error) {
	var k Key
	off := 0
	var etherType uint16
	switch lt {
	case LinkEthernet:
		if len(b) < 14 {
			return k, ErrShort
		}
		etherType = binary.BigEndian.Uint16(b[12:14])
		off = 14
		for etherType == 0x8100 || etherType == 0x88a8 || etherType == 0x9100 {
			if len(b) < off+4 {
				return k, ErrShort
			}
			etherType = binary.BigEndian.Uint16(b[off+2 : off+4])
			off += 4
		}
	case LinkRaw:
		if len(b) < 1 {
			return k, ErrShort
		}
		switch b[0] >> 4 {
		case 4:
			etherType = 0x0800
		case 6:
			etherType = 0x86dd
		default:
			return k, ErrNotIP
		}
	default:
		return k, ErrNotIP
	}
	k.L3Offset = off
	switch etherType {
	case 0x0800:
		return parseIPv4(k, b[off:])
	case 0x86dd:
		return parseIPv6(k, b[off:])
	}
	return k, ErrNotIP
}

func parseIPv4(k Key, b []byte) (Key, error) {
	if len(b) < 20 {
		return k, ErrShort
	}
	if b[0]>>4 != 4 {
		return k, ErrBadHeader
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return k, ErrBadHeader
	}
	if len(b) < ihl {
		return k, ErrShort
	}
	k.IPTotalLen = int(binary.BigEndian.Uint16(b[2:4]))
	if k.IPTotalLen < ihl {
		return k, ErrBadHeader
	}
	k.Proto = b[9]
	k.Src = netip.AddrFrom4([4]byte(b[12:16]))
	k.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	flags := binary.BigEndian.Uint16(b[6:8])
	k.FragOffset = int(flags&0x1fff) * 8
	if flags&0x2000 != 0 || k.FragOffset != 0 {
		k.Fragment = true
		k.FragID = uint32(binary.BigEndian.Uint16(b[4:6]))
	}
	if k.FragOffset != 0 {
		return k, nil
	}
	return parsePorts(k, b, ihl)
}

func parseIPv6(k Key, b []byte) (Key, error) {
	if len(b) < 40 {
		return k, ErrShort
	}
	if b[0]>>4 != 6 {
		return k, ErrBadHeader
	}
	k.IPTotalLen = int(binary.BigEndian.Uint16(b[4:6])) + 40
	k.Src = netip.AddrFrom16([16]byte(b[8:24]))
	k.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	off := 40
	// Walk extension headers (bounded: each one advances off).
	for i := 0; i < 8; i++ {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < off+2 {
				return k, ErrShort
			}
			next, off = b[off], off+8+int(b[off+1])*8
		case 44: // fragment
			if len(b) < off+8 {
				return k, ErrShort
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			k.Fragment = true
			k.FragOffset = int(fo &^ 7)
			k.FragID = binary.BigEndian.Uint32(b[off+4 : off+8])
			next, off = b[off], off+8
		default:
			k.Proto = next
			if k.FragOffset != 0 {
				return k, nil
			}
			return parsePorts(k, b, off)
		}
	}
	k.Proto = next
	return k, nil
}

func parsePorts(k Key, ip []byte, off int) (Key, error) {
	if off > len(ip) {
		return k, ErrShort
	}
	switch k.Proto {
	case ProtoTCP, ProtoUDP, 132: // 132 = SCTP
		if len(ip) < off+4 {
			return k, ErrShort
		}
		k.SrcPort = binary.BigEndian.Uint16(ip[off : off+2])
		k.DstPort = binary.BigEndian.Uint16(ip[off+2 : off+4])
	}
	k.L4Offset = k.L3Offset + off
	return k, nil
}
