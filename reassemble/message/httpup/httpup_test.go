package httpup

import "testing"

func TestParse(t *testing.T) {
	req := "GET /a?b=c HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nX-A: 1\r\nx-a: 2\r\n\r\nrest"
	m, err := Parse([]byte(req))
	if err != nil || !m.IsUpgradeRequest() || m.Target != "/a?b=c" || m.Get("x-a") != "1, 2" || m.Len != len(req)-4 {
		t.Fatalf("%+v %v", m, err)
	}
	if _, err := Parse([]byte(req[:20])); err != ErrIncomplete {
		t.Fatal(err)
	}
	resp, err := Parse([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"))
	if err != nil || !resp.IsUpgradeResponse() {
		t.Fatal(err)
	}
	if _, err := Parse([]byte("SSH-2.0-x\r\n\r\n")); err != ErrNotHTTP {
		t.Fatal(err)
	}
	for in, want := range map[string]Kind{"G": Unknown, "GET ": Request, "HTTP/1.1 ": Response, "HTTP/2": Other, "\x81\x05": Other, "": Unknown} {
		if got := Sniff([]byte(in)); got != want {
			t.Errorf("Sniff(%q) = %v, want %v", in, got, want)
		}
	}
}
