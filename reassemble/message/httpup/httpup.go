// Package httpup recognises the HTTP/1.1 WebSocket opening handshake
// (RFC 6455 section 4): the Upgrade request and the 101 response. It only
// reads header blocks; bodies are not its business.
package httpup

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Errors returned by the parsers.
var (
	// ErrIncomplete: the header block has not ended yet.
	ErrIncomplete = errors.New("httpup: header block incomplete")
	// ErrNotHTTP: the bytes do not start an HTTP/1.x request or response.
	ErrNotHTTP = errors.New("httpup: not an HTTP/1.x header block")
)

// Kind tells what the start of a byte stream looks like.
type Kind int

// Kinds returned by Sniff.
const (
	Unknown  Kind = iota // too few bytes to tell
	Request              // an HTTP/1.x request line is starting
	Response             // an HTTP/1.x status line is starting
	Other                // neither: not HTTP
)

var methods = []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// Sniff tells from the first bytes of a direction whether it starts an
// HTTP request, an HTTP response, or something else.
func Sniff(b []byte) Kind {
	unknown := false
	for _, p := range append(methods, "HTTP/1.") {
		n := min(len(b), len(p))
		if string(b[:n]) != p[:n] {
			continue
		}
		if n < len(p) {
			unknown = true
			continue
		}
		if p == "HTTP/1." {
			return Response
		}
		return Request
	}
	if unknown {
		return Unknown
	}
	return Other
}

// HeaderEnd returns the length of the header block at the start of b
// (through the blank line), or -1 if it has not ended yet.
func HeaderEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	return -1
}

// Message is a parsed request or response header block.
type Message struct {
	Method, Target string // request line
	Status         int    // status line
	// Header holds each field's values joined with ", " under its
	// lower-case name, in first-seen order of names in Names.
	Header map[string]string
	Names  []string // original spelling of each field name, in order
	Len    int      // bytes of the header block
}

// Get returns the value of a header field (case-insensitive name).
func (m *Message) Get(name string) string { return m.Header[strings.ToLower(name)] }

// IsUpgradeRequest reports whether m is a WebSocket upgrade request.
func (m *Message) IsUpgradeRequest() bool {
	return m.Method == "GET" && hasToken(m.Get("Upgrade"), "websocket")
}

// IsUpgradeResponse reports whether m is a 101 response switching to
// WebSocket.
func (m *Message) IsUpgradeResponse() bool {
	return m.Status == 101 && hasToken(m.Get("Upgrade"), "websocket")
}

func hasToken(v, tok string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), tok) {
			return true
		}
	}
	return false
}

// Parse parses the header block at the start of b (a request or a
// response). It returns ErrIncomplete if the block has not ended and
// ErrNotHTTP if the first line is neither a request nor a status line.
func Parse(b []byte) (*Message, error) {
	end := HeaderEnd(b)
	if end < 0 {
		return nil, ErrIncomplete
	}
	lines := strings.Split(strings.ReplaceAll(string(b[:end]), "\r\n", "\n"), "\n")
	m := &Message{Header: map[string]string{}, Len: end}
	first := strings.Fields(lines[0])
	switch {
	case len(first) >= 2 && strings.HasPrefix(first[0], "HTTP/1."):
		st, err := strconv.Atoi(first[1])
		if err != nil || st < 100 || st > 999 {
			return nil, ErrNotHTTP
		}
		m.Status = st
	case len(first) == 3 && strings.HasPrefix(first[2], "HTTP/1."):
		m.Method, m.Target = first[0], first[1]
	default:
		return nil, ErrNotHTTP
	}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok || k == "" {
			continue
		}
		k = strings.TrimSpace(k)
		v = strings.TrimSpace(v)
		lk := strings.ToLower(k)
		if old, seen := m.Header[lk]; seen {
			m.Header[lk] = old + ", " + v
			continue
		}
		m.Header[lk] = v
		m.Names = append(m.Names, k)
	}
	return m, nil
}
