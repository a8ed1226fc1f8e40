package wsframe

import "encoding/binary"

// MaskCopy XORs src with the mask key starting at payload position pos
// (pos counts from the frame's first payload byte) and writes the result
// to dst, which must be at least len(src) long. dst and src may be the same
// slice. It works on 8-byte words, so large payloads unmask at memory
// speed.
func MaskCopy(dst, src []byte, key [4]byte, pos uint64) {
	if len(src) == 0 {
		return
	}
	dst = dst[:len(src)]
	// Rotate the key so that k[0] applies to src[0].
	var k [4]byte
	for i := range 4 {
		k[i] = key[(pos+uint64(i))&3]
	}
	i := 0
	if len(src) >= 16 {
		k32 := binary.LittleEndian.Uint32(k[:])
		k64 := uint64(k32) | uint64(k32)<<32
		for ; i+32 <= len(src); i += 32 {
			s := src[i : i+32 : i+32]
			d := dst[i : i+32 : i+32]
			binary.LittleEndian.PutUint64(d[0:], binary.LittleEndian.Uint64(s[0:])^k64)
			binary.LittleEndian.PutUint64(d[8:], binary.LittleEndian.Uint64(s[8:])^k64)
			binary.LittleEndian.PutUint64(d[16:], binary.LittleEndian.Uint64(s[16:])^k64)
			binary.LittleEndian.PutUint64(d[24:], binary.LittleEndian.Uint64(s[24:])^k64)
		}
		for ; i+8 <= len(src); i += 8 {
			binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(src[i:])^k64)
		}
	}
	for ; i < len(src); i++ {
		dst[i] = src[i] ^ k[i&3]
	}
}
