package tlsdec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// errAuth is returned when a record fails authentication (or its padding
// is wrong): it is never passed on.
var errAuth = errors.New("tlsdec: record authentication failed")

// opener removes the protection of one record.
type opener interface {
	// open decrypts body (the record after its 5-byte header hdr) with
	// sequence number seq into dst and returns the plaintext and its
	// content type (TLS 1.3: the inner type).
	open(dst []byte, hdr []byte, body []byte, seq uint64) ([]byte, byte, error)
	// overhead is the ciphertext bytes of a record beyond its plaintext,
	// header excluded, as far as it is fixed (TLS 1.3: tag and inner type,
	// without padding; CBC: explicit IV, MAC and one byte of padding).
	overhead() int
}

func newAEAD(kind cipherKind, key []byte) (cipher.AEAD, error) {
	if kind == cipherChaCha {
		return chacha20poly1305.New(key)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// aead13 is TLS 1.3 record protection (RFC 8446 5.2).
type aead13 struct {
	a     cipher.AEAD
	iv    [12]byte
	nonce [12]byte
}

func newOpener13(s *suite, secret []byte) (*aead13, error) {
	key, iv := keys13(s, secret)
	a, err := newAEAD(s.cipher, key)
	if err != nil {
		return nil, err
	}
	o := &aead13{a: a}
	copy(o.iv[:], iv)
	return o, nil
}

func (o *aead13) overhead() int { return o.a.Overhead() + 1 }

func (o *aead13) open(dst, hdr, body []byte, seq uint64) ([]byte, byte, error) {
	o.nonce = o.iv
	for i := 0; i < 8; i++ {
		o.nonce[4+i] ^= byte(seq >> (56 - 8*i))
	}
	p, err := o.a.Open(dst[:0], o.nonce[:], body, hdr)
	if err != nil {
		return nil, 0, errAuth
	}
	i := len(p) - 1
	for i >= 0 && p[i] == 0 {
		i--
	}
	if i < 0 {
		return nil, 0, errAuth // no inner content type
	}
	return p[:i], p[i], nil
}

// aead12 is TLS 1.2 AEAD protection: AES-GCM with a 4-byte salt and an
// 8-byte explicit nonce (RFC 5288), or ChaCha20-Poly1305 with the IV
// XORed with the sequence number (RFC 7905).
type aead12 struct {
	a        cipher.AEAD
	explicit bool
	iv       [12]byte
	nonce    [12]byte
	ad       [13]byte
}

func newOpener12AEAD(s *suite, key, iv []byte) (*aead12, error) {
	a, err := newAEAD(s.cipher, key)
	if err != nil {
		return nil, err
	}
	o := &aead12{a: a, explicit: s.cipher == cipherAESGCM}
	copy(o.iv[:], iv)
	return o, nil
}

func (o *aead12) overhead() int {
	if o.explicit {
		return 8 + o.a.Overhead()
	}
	return o.a.Overhead()
}

func (o *aead12) open(dst, hdr, body []byte, seq uint64) ([]byte, byte, error) {
	o.nonce = o.iv
	if o.explicit {
		if len(body) < 8+o.a.Overhead() {
			return nil, 0, errAuth
		}
		copy(o.nonce[4:], body[:8])
		body = body[8:]
	} else {
		for i := 0; i < 8; i++ {
			o.nonce[4+i] ^= byte(seq >> (56 - 8*i))
		}
	}
	if len(body) < o.a.Overhead() {
		return nil, 0, errAuth
	}
	binary.BigEndian.PutUint64(o.ad[:8], seq)
	copy(o.ad[8:11], hdr[:3])
	binary.BigEndian.PutUint16(o.ad[11:], uint16(len(body)-o.a.Overhead()))
	p, err := o.a.Open(dst[:0], o.nonce[:], body, o.ad[:])
	if err != nil {
		return nil, 0, errAuth
	}
	return p, hdr[0], nil
}

// cbc12 is TLS 1.1/1.2 AES-CBC with HMAC, MAC-then-encrypt (RFC 5246
// 6.2.3.2) or encrypt-then-MAC (RFC 7366).
type cbc12 struct {
	b   cipher.Block
	mac hash.Hash
	etm bool
	sum []byte
}

func newOpenerCBC(s *suite, macKey, key []byte, etm bool) (*cbc12, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return &cbc12{b: b, mac: hmac.New(s.mac, macKey), etm: etm}, nil
}

func (o *cbc12) overhead() int { return aes.BlockSize + o.mac.Size() + 1 }

func (o *cbc12) macOf(seq uint64, hdr []byte, n int, parts ...[]byte) []byte {
	var ad [13]byte
	binary.BigEndian.PutUint64(ad[:8], seq)
	copy(ad[8:11], hdr[:3])
	binary.BigEndian.PutUint16(ad[11:], uint16(n))
	o.mac.Reset()
	o.mac.Write(ad[:])
	for _, p := range parts {
		o.mac.Write(p)
	}
	o.sum = o.mac.Sum(o.sum[:0])
	return o.sum
}

func (o *cbc12) open(dst, hdr, body []byte, seq uint64) ([]byte, byte, error) {
	bs, ms := aes.BlockSize, o.mac.Size()
	if o.etm {
		if len(body) < bs+bs+ms {
			return nil, 0, errAuth
		}
		ct, tag := body[:len(body)-ms], body[len(body)-ms:]
		if !hmac.Equal(o.macOf(seq, hdr, len(ct), ct), tag) {
			return nil, 0, errAuth
		}
		body = ct
	}
	if len(body) < 2*bs || (len(body)-bs)%bs != 0 {
		return nil, 0, errAuth
	}
	iv, ct := body[:bs], body[bs:]
	if cap(dst) < len(ct) {
		dst = make([]byte, len(ct))
	}
	p := dst[:len(ct)]
	cipher.NewCBCDecrypter(o.b, iv).CryptBlocks(p, ct)
	pad := int(p[len(p)-1])
	if pad+1 > len(p) {
		return nil, 0, errAuth
	}
	for _, v := range p[len(p)-1-pad:] {
		if int(v) != pad {
			return nil, 0, errAuth
		}
	}
	p = p[:len(p)-1-pad]
	if o.etm {
		return p, hdr[0], nil
	}
	if len(p) < ms {
		return nil, 0, errAuth
	}
	data, tag := p[:len(p)-ms], p[len(p)-ms:]
	if subtle.ConstantTimeCompare(o.macOf(seq, hdr, len(data), data), tag) != 1 {
		return nil, 0, errAuth
	}
	return data, hdr[0], nil
}
