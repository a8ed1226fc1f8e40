package wsframe

import "encoding/binary"

// CloseCode returns the status code of a close frame payload, or 0 when
// the payload carries none (fewer than 2 bytes).
func CloseCode(payload []byte) int {
	if len(payload) < 2 {
		return 0
	}
	return int(binary.BigEndian.Uint16(payload))
}

// ValidCloseCode reports whether code may appear on the wire (RFC 6455
// section 7.4: 1000-1003, 1007-1014 and the registered/private ranges
// 3000-4999).
func ValidCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
