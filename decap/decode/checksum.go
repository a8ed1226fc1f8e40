package decode

import (
	"encoding/binary"
	"math/bits"

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

// sum adds b as big-endian 16-bit words to s (ones' complement, unfolded):
// 64-bit words with end-around carry, since 2^64 ≡ 1 (mod 0xffff).
func sum(s uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[0:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	s, c = bits.Add64(s, c, 0)
	s += c
	var tail uint64
	if len(b) >= 4 {
		tail += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		tail += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		tail += uint64(b[0]) << 8
	}
	s, c = bits.Add64(s, tail, 0)
	return s + c
}

func fold(s uint64) uint16 {
	s = s&0xffffffff + s>>32 // at most 33 bits
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
