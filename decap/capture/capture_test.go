package capture

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
)

const captures = "../../testdata/captures/"

func TestReadBoth(t *testing.T) {
	for name, want := range map[string]int{"aws-vpc-mirror-vxlan-ssh.pcap": 100, "ws-oversized-close.pcapng": 8} {
		f, err := os.Open(captures + name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var p Packet
		var last int64
		for {
			err := r.Next(&p)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.LinkType != 1 || p.TimeNs < last || len(p.Data) == 0 || p.OrigLen < len(p.Data) {
				t.Fatalf("%s packet %d: %+v", name, n, p)
			}
			last = p.TimeNs
			n++
		}
		f.Close()
		if n != want {
			t.Fatalf("%s: %d packets, want %d", name, n, want)
		}
	}
}

// FuzzCapture: any bytes give packets or an error, never a panic or a
// runaway allocation.
func FuzzCapture(f *testing.F) {
	for _, name := range []string{"vxlan-icmp-arp.pcap", "ws-oversized-close.pcapng"} {
		b, err := os.ReadFile(captures + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 600)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		var p Packet
		for range 1000 {
			if r.Next(&p) != nil {
				return
			}
		}
	})
}
