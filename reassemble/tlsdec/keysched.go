package tlsdec

import (
	"crypto/hkdf"
	"crypto/hmac"
	"hash"
)

// expandLabel is HKDF-Expand-Label of RFC 8446 7.1.
func expandLabel(h func() hash.Hash, secret []byte, label string, length int) []byte {
	info := make([]byte, 0, 4+6+len(label))
	info = append(info, byte(length>>8), byte(length), byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0) // empty context
	out, err := hkdf.Expand(h, secret, string(info), length)
	if err != nil {
		return nil
	}
	return out
}

// nextTrafficSecret is the KeyUpdate ratchet (RFC 8446 7.2).
func nextTrafficSecret(s *suite, secret []byte) []byte {
	return expandLabel(s.prf, secret, "traffic upd", len(secret))
}

// keys13 derives the record key and IV from a TLS 1.3 traffic secret.
func keys13(s *suite, secret []byte) (key, iv []byte) {
	return expandLabel(s.prf, secret, "key", s.keyLen), expandLabel(s.prf, secret, "iv", 12)
}

// prf12 is the TLS 1.2 PRF (RFC 5246 5): P_hash(secret, label + seed).
func prf12(h func() hash.Hash, secret []byte, label string, seed []byte, n int) []byte {
	ls := append([]byte(label), seed...)
	mac := hmac.New(h, secret)
	mac.Write(ls)
	a := mac.Sum(nil)
	out := make([]byte, 0, n+64)
	for len(out) < n {
		mac.Reset()
		mac.Write(a)
		mac.Write(ls)
		out = mac.Sum(out)
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(a[:0])
	}
	return out[:n]
}

// keyBlock12 splits the TLS 1.2 key block (RFC 5246 6.3) into the write
// MAC keys, keys and IVs of client and server.
func keyBlock12(s *suite, master []byte, clientRandom, serverRandom [32]byte) (cMAC, sMAC, cKey, sKey, cIV, sIV []byte) {
	seed := append(append([]byte(nil), serverRandom[:]...), clientRandom[:]...)
	n := 2*s.macLen + 2*s.keyLen + 2*s.ivLen
	b := prf12(s.prf, master, "key expansion", seed, n)
	take := func(k int) []byte { v := b[:k:k]; b = b[k:]; return v }
	cMAC, sMAC = take(s.macLen), take(s.macLen)
	cKey, sKey = take(s.keyLen), take(s.keyLen)
	cIV, sIV = take(s.ivLen), take(s.ivLen)
	return
}
