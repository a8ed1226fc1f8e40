package tlsdec

import (
	"bytes"
	"crypto/tls"
	"testing"
)

// TestMidStreamRecords: Go crypto/tls streams cut at any offset after the
// handshake are found to be records (TLS 1.3 and 1.2); plaintext
// WebSocket frames, HTTP and JSON are not, and a short stream that could
// still be either waits for more bytes.
func TestMidStreamRecords(t *testing.T) {
	for _, ver := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		cp := runSession(t, session{maxVersion: ver, c2s: []int{1000}, s2c: []int{200000, 300, 40, 70000}})
		recs := recordStarts(cp.s2c)
		for _, off := range []int{recs[5], recs[5] + 1, recs[6] - 1, recs[7] + 9000} {
			if yes, _ := MidStreamRecords(cp.s2c[off:], true, false); !yes {
				t.Errorf("version %x: records from offset %d not found", ver, off)
			}
		}
		if yes, _ := MidStreamRecords(cp.s2c[recs[5]+1:], false, true); yes {
			t.Errorf("version %x: aligned search found records at a wrong offset", ver)
		}
	}
	ws := append([]byte{0x82, 0x7e, 0x03, 0xe8}, bytes.Repeat([]byte{0x17, 0x03}, 500)...)
	for _, b := range [][]byte{
		bytes.Repeat([]byte(`{"price":101.5,"qty":3}`), 2000),
		[]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
		ws,
	} {
		if yes, _ := MidStreamRecords(b, true, true); yes {
			t.Errorf("%q... taken for records", b[:min(20, len(b))])
		}
	}
	if yes, more := MidStreamRecords([]byte{9, 9, 9, 23, 3, 3, 0, 10, 1}, true, false); yes || !more {
		t.Errorf("short stream decided: %v %v", yes, more)
	}
}
