package keys

import "bytes"

// LineKind is what CheckLine found a key log line to be.
type LineKind int

const (
	// LineKey is a well-formed key line: LABEL client_random secret.
	LineKey LineKind = iota
	// LineSkip is a blank or comment line, ignored without being counted
	// as bad.
	LineSkip
	// LineBad is a line of any other shape.
	LineBad
)

// Labels are the NSS key log labels accepted (proto/README.md, "TLS key log
// lines"): CLIENT_RANDOM for TLS 1.2 and older, the rest for TLS 1.3.
var Labels = []string{
	"CLIENT_RANDOM",
	"CLIENT_EARLY_TRAFFIC_SECRET",
	"CLIENT_HANDSHAKE_TRAFFIC_SECRET",
	"SERVER_HANDSHAKE_TRAFFIC_SECRET",
	"CLIENT_TRAFFIC_SECRET_0",
	"SERVER_TRAFFIC_SECRET_0",
	"EXPORTER_SECRET",
}

// Bounds of the secret, in bytes: TLS 1.2's master secret is 48 bytes, TLS
// 1.3's secrets are the hash length (32 or 48, 64 for SHA-512 suites).
const (
	randomLen    = 32
	minSecretLen = 16
	maxSecretLen = 64
)

// MaxLineLen is the longest key line accepted, without its newline: the
// longest label, two spaces, the client random and the largest secret in
// hex. Longer lines are bad (and are never held whole in memory).
const MaxLineLen = len("CLIENT_HANDSHAKE_TRAFFIC_SECRET") + 2 + 2*randomLen + 2*maxSecretLen

// CheckLine classifies one line (without its trailing "\n"; a trailing
// "\r" is tolerated). It never retains or copies line.
func CheckLine(line []byte) LineKind {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' {
		return LineSkip
	}
	if len(line) > MaxLineLen {
		return LineBad
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 || !knownLabel(line[:sp1]) {
		return LineBad
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 < 0 {
		return LineBad
	}
	random, secret := rest[:sp2], rest[sp2+1:]
	if len(random) != 2*randomLen || !isHex(random) {
		return LineBad
	}
	if len(secret)%2 != 0 || len(secret) < 2*minSecretLen || len(secret) > 2*maxSecretLen || !isHex(secret) {
		return LineBad
	}
	return LineKey
}

func knownLabel(b []byte) bool {
	for _, l := range Labels {
		if string(b) == l {
			return true
		}
	}
	return false
}

func isHex(b []byte) bool {
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}
