package tlsdec

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
)

// cipherKind is the bulk cipher of a suite.
type cipherKind uint8

const (
	cipherAESGCM cipherKind = iota + 1
	cipherChaCha
	cipherAESCBC
)

// suite describes one cipher suite the decryptor supports.
type suite struct {
	id     uint16
	name   string
	tls13  bool
	cipher cipherKind
	keyLen int
	ivLen  int              // fixed IV bytes from the key schedule (TLS 1.2 key block)
	macLen int              // CBC: HMAC output length (0 for AEAD)
	mac    func() hash.Hash // CBC: HMAC hash
	prf    func() hash.Hash // TLS 1.2 PRF hash; TLS 1.3 HKDF hash
}

var suites = map[uint16]*suite{}

func init() {
	for _, s := range []suite{
		{id: 0x1301, name: "TLS_AES_128_GCM_SHA256", tls13: true, cipher: cipherAESGCM, keyLen: 16, ivLen: 12, prf: sha256.New},
		{id: 0x1302, name: "TLS_AES_256_GCM_SHA384", tls13: true, cipher: cipherAESGCM, keyLen: 32, ivLen: 12, prf: sha512.New384},
		{id: 0x1303, name: "TLS_CHACHA20_POLY1305_SHA256", tls13: true, cipher: cipherChaCha, keyLen: 32, ivLen: 12, prf: sha256.New},

		{id: 0xc02f, name: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", cipher: cipherAESGCM, keyLen: 16, ivLen: 4, prf: sha256.New},
		{id: 0xc030, name: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", cipher: cipherAESGCM, keyLen: 32, ivLen: 4, prf: sha512.New384},
		{id: 0xc02b, name: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", cipher: cipherAESGCM, keyLen: 16, ivLen: 4, prf: sha256.New},
		{id: 0xc02c, name: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", cipher: cipherAESGCM, keyLen: 32, ivLen: 4, prf: sha512.New384},
		{id: 0x009c, name: "TLS_RSA_WITH_AES_128_GCM_SHA256", cipher: cipherAESGCM, keyLen: 16, ivLen: 4, prf: sha256.New},
		{id: 0x009d, name: "TLS_RSA_WITH_AES_256_GCM_SHA384", cipher: cipherAESGCM, keyLen: 32, ivLen: 4, prf: sha512.New384},
		{id: 0x009e, name: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", cipher: cipherAESGCM, keyLen: 16, ivLen: 4, prf: sha256.New},
		{id: 0x009f, name: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", cipher: cipherAESGCM, keyLen: 32, ivLen: 4, prf: sha512.New384},

		{id: 0xcca8, name: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", cipher: cipherChaCha, keyLen: 32, ivLen: 12, prf: sha256.New},
		{id: 0xcca9, name: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", cipher: cipherChaCha, keyLen: 32, ivLen: 12, prf: sha256.New},
		{id: 0xccaa, name: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", cipher: cipherChaCha, keyLen: 32, ivLen: 12, prf: sha256.New},

		{id: 0x002f, name: "TLS_RSA_WITH_AES_128_CBC_SHA", cipher: cipherAESCBC, keyLen: 16, ivLen: 16, macLen: 20, mac: sha1.New, prf: sha256.New},
		{id: 0x0035, name: "TLS_RSA_WITH_AES_256_CBC_SHA", cipher: cipherAESCBC, keyLen: 32, ivLen: 16, macLen: 20, mac: sha1.New, prf: sha256.New},
		{id: 0x003c, name: "TLS_RSA_WITH_AES_128_CBC_SHA256", cipher: cipherAESCBC, keyLen: 16, ivLen: 16, macLen: 32, mac: sha256.New, prf: sha256.New},
		{id: 0x003d, name: "TLS_RSA_WITH_AES_256_CBC_SHA256", cipher: cipherAESCBC, keyLen: 32, ivLen: 16, macLen: 32, mac: sha256.New, prf: sha256.New},
		{id: 0x0033, name: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", cipher: cipherAESCBC, keyLen: 16, ivLen: 16, macLen: 20, mac: sha1.New, prf: sha256.New},
		{id: 0x0039, name: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", cipher: cipherAESCBC, keyLen: 32, ivLen: 16, macLen: 20, mac: sha1.New, prf: sha256.New},
		{id: 0x0067, name: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", cipher: cipherAESCBC, keyLen: 16, ivLen: 16, macLen: 32, mac: sha256.New, prf: sha256.New},
		{id: 0x006b, name: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", cipher: cipherAESCBC, keyLen: 32, ivLen: 16, macLen: 32, mac: sha256.New, prf: sha256.New},
		{id: 0xc009, name: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", cipher: cipherAESCBC, keyLen: 16, ivLen: 16, macLen: 20, mac: sha1.New, prf: sha256.New},
		{id: 0xc00a, name: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", cipher: cipherAESCBC, keyLen: 32, ivLen: 16, macLen: 20, mac: sha1.New, prf: sha256.New},
		{id: 0xc013, name: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", cipher: cipherAESCBC, keyLen: 16, ivLen: 16, macLen: 20, mac: sha1.New, prf: sha256.New},
		{id: 0xc014, name: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", cipher: cipherAESCBC, keyLen: 32, ivLen: 16, macLen: 20, mac: sha1.New, prf: sha256.New},
		{id: 0xc023, name: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", cipher: cipherAESCBC, keyLen: 16, ivLen: 16, macLen: 32, mac: sha256.New, prf: sha256.New},
		{id: 0xc024, name: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", cipher: cipherAESCBC, keyLen: 32, ivLen: 16, macLen: 48, mac: sha512.New384, prf: sha512.New384},
		{id: 0xc027, name: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", cipher: cipherAESCBC, keyLen: 16, ivLen: 16, macLen: 32, mac: sha256.New, prf: sha256.New},
		{id: 0xc028, name: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", cipher: cipherAESCBC, keyLen: 32, ivLen: 16, macLen: 48, mac: sha512.New384, prf: sha512.New384},
	} {
		s := s
		suites[s.id] = &s
	}
}

// SuiteName returns the IANA name of a cipher suite the decryptor
// supports, or "0x%04x" for another.
func SuiteName(id uint16) string {
	if s := suites[id]; s != nil {
		return s.name
	}
	const hexd = "0123456789abcdef"
	return "0x" + string([]byte{hexd[id>>12], hexd[id>>8&15], hexd[id>>4&15], hexd[id&15]})
}

// VersionName returns "TLS 1.2" style names.
func VersionName(v uint16) string {
	switch v {
	case VersionTLS10:
		return "TLS 1.0"
	case VersionTLS11:
		return "TLS 1.1"
	case VersionTLS12:
		return "TLS 1.2"
	case VersionTLS13:
		return "TLS 1.3"
	case 0:
		return ""
	}
	return SuiteName(v)
}
