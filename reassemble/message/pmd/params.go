// Package pmd implements the receiving side of the WebSocket
// permessage-deflate extension (RFC 7692): parsing the negotiated
// parameters and inflating messages as a stream, with or without context
// takeover.
package pmd

import (
	"strconv"
	"strings"
)

// Takeover says whether the compressor of one direction keeps its LZ77
// window from one message to the next.
type Takeover int

// Takeover modes.
const (
	// TakeoverUnknown: the handshake was not seen. Decoding uses the
	// history it has (exact when it succeeds) and flags failures.
	TakeoverUnknown Takeover = iota
	// TakeoverOn: context takeover (the RFC 7692 default).
	TakeoverOn
	// TakeoverOff: *_no_context_takeover was negotiated.
	TakeoverOff
)

// Params are the permessage-deflate parameters a server accepted.
type Params struct {
	Enabled                 bool
	ServerNoContextTakeover bool
	ClientNoContextTakeover bool
	ServerMaxWindowBits     int // 8..15; 15 when absent
	ClientMaxWindowBits     int // 8..15; 15 when absent or given without a value
}

// Parse reads a Sec-WebSocket-Extensions value (as accepted by the 101
// response) and returns the permessage-deflate parameters of the first
// permessage-deflate entry. Unknown extensions and parameters are ignored.
func Parse(ext string) Params {
	p := Params{ServerMaxWindowBits: 15, ClientMaxWindowBits: 15}
	for _, e := range strings.Split(ext, ",") {
		parts := strings.Split(e, ";")
		if !strings.EqualFold(strings.TrimSpace(parts[0]), "permessage-deflate") {
			continue
		}
		p.Enabled = true
		for _, kv := range parts[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
			k = strings.ToLower(strings.TrimSpace(k))
			v = strings.Trim(strings.TrimSpace(v), `"`)
			switch k {
			case "server_no_context_takeover":
				p.ServerNoContextTakeover = true
			case "client_no_context_takeover":
				p.ClientNoContextTakeover = true
			case "server_max_window_bits":
				p.ServerMaxWindowBits = bits(v)
			case "client_max_window_bits":
				p.ClientMaxWindowBits = bits(v)
			}
		}
		return p
	}
	return p
}

func bits(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil || n < 8 || n > 15 {
		return 15
	}
	return n
}

// Direction returns the takeover mode and window bits of the compressor
// of the client (fromClient) or of the server.
func (p Params) Direction(fromClient bool) (Takeover, int) {
	if fromClient {
		if p.ClientNoContextTakeover {
			return TakeoverOff, p.ClientMaxWindowBits
		}
		return TakeoverOn, p.ClientMaxWindowBits
	}
	if p.ServerNoContextTakeover {
		return TakeoverOff, p.ServerMaxWindowBits
	}
	return TakeoverOn, p.ServerMaxWindowBits
}
