package tlsdec

import (
	"crypto/sha256"
	"errors"
)

// TLS versions as on the wire.
const (
	VersionTLS10 uint16 = 0x0301
	VersionTLS11 uint16 = 0x0302
	VersionTLS12 uint16 = 0x0303
	VersionTLS13 uint16 = 0x0304
)

// Extension numbers read by the hello parser.
const (
	extServerName       = 0
	extALPN             = 16
	extEncryptThenMAC   = 22
	extExtendedMaster   = 23
	extSessionTicket    = 35
	extPreSharedKey     = 41
	extEarlyData        = 42
	extSupportedVersion = 43
)

// ClientHello is what the decryptor reads from a ClientHello.
type ClientHello struct {
	Random         [32]byte
	LegacyVersion  uint16
	SessionID      []byte
	CipherSuites   []uint16
	Versions       []uint16 // supported_versions, if sent
	ServerName     string
	ALPN           []string
	PSK            bool   // pre_shared_key offered (TLS 1.3 resumption)
	EarlyData      bool   // early_data offered (0-RTT)
	SessionTicket  bool   // session_ticket extension present and non-empty (TLS 1.2 resumption attempt)
	Ticket         []byte // its contents
	EncryptThenMAC bool
	ExtendedMaster bool
}

// ServerHello is what the decryptor reads from a ServerHello.
type ServerHello struct {
	Random         [32]byte
	LegacyVersion  uint16
	Version        uint16 // negotiated: supported_versions if present, else the legacy version
	SessionID      []byte
	CipherSuite    uint16
	ALPN           string // TLS 1.2 only (TLS 1.3 sends it encrypted)
	HelloRetry     bool   // a HelloRetryRequest (TLS 1.3)
	PSK            bool   // the server accepted a pre-shared key (TLS 1.3 resumption)
	EncryptThenMAC bool
	ExtendedMaster bool
}

// helloRetryRandom is the Random of a HelloRetryRequest (RFC 8446 4.1.3).
var helloRetryRandom = sha256.Sum256([]byte("HelloRetryRequest"))

// ErrBadHello is returned for a malformed hello message.
var ErrBadHello = errors.New("tlsdec: malformed hello")

// reader reads big-endian fields without ever panicking.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) n(k int) []byte {
	if r.bad || k < 0 || len(r.b) < k {
		r.bad = true
		return nil
	}
	v := r.b[:k]
	r.b = r.b[k:]
	return v
}

func (r *reader) u8() int {
	v := r.n(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.n(2)
	if v == nil {
		return 0
	}
	return int(v[0])<<8 | int(v[1])
}

func (r *reader) u24() int {
	v := r.n(3)
	if v == nil {
		return 0
	}
	return int(v[0])<<16 | int(v[1])<<8 | int(v[2])
}

func (r *reader) vec8() *reader  { return &reader{b: r.n(r.u8()), bad: r.bad} }
func (r *reader) vec16() *reader { return &reader{b: r.n(r.u16()), bad: r.bad} }

// ParseClientHello parses the body of a ClientHello handshake message (the
// bytes after its 4-byte handshake header).
func ParseClientHello(body []byte) (*ClientHello, error) {
	r := &reader{b: body}
	h := &ClientHello{LegacyVersion: uint16(r.u16())}
	copy(h.Random[:], r.n(32))
	h.SessionID = append([]byte(nil), r.vec8().b...)
	cs := r.vec16()
	for len(cs.b) >= 2 {
		h.CipherSuites = append(h.CipherSuites, uint16(cs.u16()))
	}
	r.vec8() // compression methods
	if r.bad {
		return nil, ErrBadHello
	}
	if len(r.b) == 0 {
		return h, nil // no extensions
	}
	exts := r.vec16()
	for len(exts.b) > 0 && !exts.bad {
		typ := exts.u16()
		e := exts.vec16()
		switch typ {
		case extServerName:
			l := e.vec16()
			for len(l.b) > 0 && !l.bad {
				kind := l.u8()
				name := l.vec16()
				if kind == 0 && h.ServerName == "" {
					h.ServerName = string(name.b)
				}
			}
		case extALPN:
			l := e.vec16()
			for len(l.b) > 0 && !l.bad {
				p := l.vec8()
				if !p.bad {
					h.ALPN = append(h.ALPN, string(p.b))
				}
			}
		case extSupportedVersion:
			l := e.vec8()
			for len(l.b) >= 2 {
				h.Versions = append(h.Versions, uint16(l.u16()))
			}
		case extPreSharedKey:
			h.PSK = true
		case extEarlyData:
			h.EarlyData = true
		case extSessionTicket:
			h.SessionTicket = len(e.b) > 0
			h.Ticket = append([]byte(nil), e.b...)
		case extEncryptThenMAC:
			h.EncryptThenMAC = true
		case extExtendedMaster:
			h.ExtendedMaster = true
		}
	}
	if exts.bad || r.bad {
		return nil, ErrBadHello
	}
	return h, nil
}

// ParseServerHello parses the body of a ServerHello handshake message.
func ParseServerHello(body []byte) (*ServerHello, error) {
	r := &reader{b: body}
	h := &ServerHello{LegacyVersion: uint16(r.u16())}
	copy(h.Random[:], r.n(32))
	h.SessionID = append([]byte(nil), r.vec8().b...)
	h.CipherSuite = uint16(r.u16())
	r.u8() // compression
	if r.bad {
		return nil, ErrBadHello
	}
	h.Version = h.LegacyVersion
	h.HelloRetry = h.Random == helloRetryRandom
	if len(r.b) > 0 {
		exts := r.vec16()
		for len(exts.b) > 0 && !exts.bad {
			typ := exts.u16()
			e := exts.vec16()
			switch typ {
			case extSupportedVersion:
				if v := e.u16(); !e.bad {
					h.Version = uint16(v)
				}
			case extALPN:
				l := e.vec16()
				if p := l.vec8(); !p.bad {
					h.ALPN = string(p.b)
				}
			case extPreSharedKey:
				h.PSK = true
			case extEncryptThenMAC:
				h.EncryptThenMAC = true
			case extExtendedMaster:
				h.ExtendedMaster = true
			}
		}
		if exts.bad {
			return nil, ErrBadHello
		}
	}
	return h, nil
}

// LooksLikeClientHello reports whether a stream starting with b starts
// with a TLS handshake record holding a ClientHello. need is true when b
// is too short to tell (fewer than 6 bytes that could still be one).
func LooksLikeClientHello(b []byte) (yes, need bool) {
	want := []byte{recordHandshake, 0x03}
	for i := 0; i < len(b) && i < 2; i++ {
		if b[i] != want[i] {
			return false, false
		}
	}
	if len(b) >= 3 && b[2] > 0x04 {
		return false, false
	}
	if len(b) >= 5 {
		n := int(b[3])<<8 | int(b[4])
		if n < 4 || n > maxPlaintext {
			return false, false
		}
	}
	if len(b) < 6 {
		return false, true
	}
	return b[5] == hsClientHello, false
}

// LooksLikeServerHello reports whether a stream starting with b starts
// with a TLS handshake record holding a ServerHello (need: too short to
// tell).
func LooksLikeServerHello(b []byte) (yes, need bool) {
	if len(b) >= 6 && b[5] != hsServerHello {
		return false, false
	}
	if len(b) >= 6 {
		c := append([]byte(nil), b[:6]...)
		c[5] = hsClientHello
		return LooksLikeClientHello(c)
	}
	return LooksLikeClientHello(b)
}
