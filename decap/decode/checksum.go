package decode

import (
	"encoding/binary"

	"github.com/tapline/tapline/proto/flow"
)

// checksumsOK verifies the IPv4 header checksum and, for an unfragmented
// TCP or UDP packet captured whole, the transport checksum. UDP over IPv4
// with checksum 0 (none) passes.
func checksumsOK(b []byte, k *flow.Key) bool {
	ip := b[k.L3Offset : k.L3Offset+k.IPTotalLen]
	v4 := ip[0]>>4 == 4
	if v4 {
		ihl := int(ip[0]&0x0f) * 4
		if fold(sum(0, ip[:ihl])) != 0xffff {
			return false
		}
	}
	if k.Fragment || k.L4Offset == 0 || k.L4Offset > k.L3Offset+k.IPTotalLen || (k.Proto != flow.ProtoTCP && k.Proto != flow.ProtoUDP) {
		return true
	}
	l4 := b[k.L4Offset : k.L3Offset+k.IPTotalLen]
	if k.Proto == flow.ProtoUDP {
		if len(l4) < 8 {
			return false
		}
		if v4 && l4[6] == 0 && l4[7] == 0 {
			return true
		}
	} else if len(l4) < 20 {
		return false
	}
	var s uint64
	if v4 {
		s = sum(s, ip[12:20])
	} else {
		s = sum(s, ip[8:40])
	}
	s += uint64(k.Proto) + uint64(len(l4))
	return fold(sum(s, l4)) == 0xffff
}

// sum adds b as big-endian 16-bit words to s (ones' complement, unfolded).
func sum(s uint64, b []byte) uint64 {
	for len(b) >= 32 {
		s += uint64(binary.BigEndian.Uint32(b[0:])) + uint64(binary.BigEndian.Uint32(b[4:])) +
			uint64(binary.BigEndian.Uint32(b[8:])) + uint64(binary.BigEndian.Uint32(b[12:])) +
			uint64(binary.BigEndian.Uint32(b[16:])) + uint64(binary.BigEndian.Uint32(b[20:])) +
			uint64(binary.BigEndian.Uint32(b[24:])) + uint64(binary.BigEndian.Uint32(b[28:]))
		b = b[32:]
	}
	for len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

func fold(s uint64) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
