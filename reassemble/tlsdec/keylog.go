package tlsdec

import (
	"bytes"
	"encoding/hex"
	"errors"
)

// Label is the kind of secret of a key log line.
type Label uint8

// The labels of the NSS key log format.
const (
	LabelUnknown Label = iota
	// LabelClientRandom is CLIENT_RANDOM: the 48-byte master secret of a
	// TLS 1.2 (or older) session.
	LabelClientRandom
	LabelClientHandshake // CLIENT_HANDSHAKE_TRAFFIC_SECRET
	LabelServerHandshake // SERVER_HANDSHAKE_TRAFFIC_SECRET
	LabelClientTraffic0  // CLIENT_TRAFFIC_SECRET_0
	LabelServerTraffic0  // SERVER_TRAFFIC_SECRET_0
	LabelExporter        // EXPORTER_SECRET
	LabelClientEarly     // CLIENT_EARLY_TRAFFIC_SECRET
	numLabels
)

var labelNames = [numLabels]string{
	LabelClientRandom:    "CLIENT_RANDOM",
	LabelClientHandshake: "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
	LabelServerHandshake: "SERVER_HANDSHAKE_TRAFFIC_SECRET",
	LabelClientTraffic0:  "CLIENT_TRAFFIC_SECRET_0",
	LabelServerTraffic0:  "SERVER_TRAFFIC_SECRET_0",
	LabelExporter:        "EXPORTER_SECRET",
	LabelClientEarly:     "CLIENT_EARLY_TRAFFIC_SECRET",
}

// String returns the label as written in a key log.
func (l Label) String() string {
	if l > LabelUnknown && l < numLabels {
		return labelNames[l]
	}
	return "UNKNOWN"
}

// KeyLogLine is one parsed line of a key log.
type KeyLogLine struct {
	Label        Label
	ClientRandom [32]byte
	Secret       []byte
}

// Errors of ParseKeyLogLine.
var (
	// ErrSkip is returned for blank and comment lines: not an error in the
	// log, nothing to store.
	ErrSkip = errors.New("tlsdec: comment or blank line")
	// ErrBadLine is returned for any line that is not a key log line.
	ErrBadLine = errors.New("tlsdec: not a key log line")
)

// maxSecret is the longest secret accepted (SHA-384 secrets are 48 bytes,
// as is the TLS 1.2 master secret).
const maxSecret = 64

// ParseKeyLogLine parses one line (without or with its trailing newline,
// a CR before it is allowed). Blank and '#' lines, and the labels not
// needed to decrypt (RSA, EARLY_EXPORTER_SECRET, ECH_*), give ErrSkip; a line of
// any other shape, an unknown label, a client random that is not 32 bytes
// of hex or a secret of a length no TLS version uses gives ErrBadLine.
func ParseKeyLogLine(line []byte) (KeyLogLine, error) {
	line = bytes.TrimRight(line, "\r\n")
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '#' {
		return KeyLogLine{}, ErrSkip
	}
	f := bytes.Fields(line)
	if len(f) != 3 {
		return KeyLogLine{}, ErrBadLine
	}
	switch string(f[0]) {
	case "RSA", "EARLY_EXPORTER_SECRET", "ECH_SECRET", "ECH_CONFIG":
		// Key log labels that are not needed to decrypt (the RSA
		// pre-master secret comes with a CLIENT_RANDOM line too).
		return KeyLogLine{}, ErrSkip
	}
	var k KeyLogLine
	for l := LabelClientRandom; l < numLabels; l++ {
		if string(f[0]) == labelNames[l] {
			k.Label = l
			break
		}
	}
	if k.Label == LabelUnknown || len(f[1]) != 64 || len(f[2])%2 != 0 || len(f[2]) > 2*maxSecret {
		return KeyLogLine{}, ErrBadLine
	}
	if _, err := hex.Decode(k.ClientRandom[:], f[1]); err != nil {
		return KeyLogLine{}, ErrBadLine
	}
	k.Secret = make([]byte, len(f[2])/2)
	if _, err := hex.Decode(k.Secret, f[2]); err != nil {
		return KeyLogLine{}, ErrBadLine
	}
	switch n := len(k.Secret); {
	case k.Label == LabelClientRandom && n != 48:
		return KeyLogLine{}, ErrBadLine
	case k.Label != LabelClientRandom && n != 32 && n != 48:
		return KeyLogLine{}, ErrBadLine
	}
	return k, nil
}
