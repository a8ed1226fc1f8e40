package httpup

import (
	"strings"
	"testing"
)

func FuzzHTTPUpgrade(f *testing.F) {
	f.Add([]byte("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"))
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\n\nbody"))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("\x16\x03\x01\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k := Sniff(b)
		m, err := Parse(b)
		if err != nil {
			return
		}
		if m.Len > len(b) || m.Len != HeaderEnd(b) {
			t.Fatalf("len %d of %d", m.Len, len(b))
		}
		if (m.Status == 0) == (m.Method == "") {
			t.Fatalf("neither/both request and response: %+v", m)
		}
		if m.IsUpgradeRequest() && k != Request {
			t.Fatalf("upgrade request sniffed as %v", k)
		}
		for _, n := range m.Names {
			if _, ok := m.Header[strings.ToLower(n)]; !ok {
				t.Fatalf("name %q without value", n)
			}
		}
	})
}
