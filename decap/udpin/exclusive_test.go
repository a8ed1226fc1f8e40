package udpin

import (
	"net/netip"
	"testing"
)

const procUDPSample = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  721: 0100007F:12B5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  722: 00000000:17C1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0
  723: 00000000000000000000000001000000:12B5 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4444 2 0000000000000000 0
`

// TestParseBound: local addresses and inodes of /proc/net/udp and udp6.
func TestParseBound(t *testing.T) {
	got := parseBound([]byte(procUDPSample))
	want := []Foreign{
		{Local: netip.MustParseAddrPort("127.0.0.1:4789"), Inode: 4242},
		{Local: netip.MustParseAddrPort("0.0.0.0:6081"), Inode: 4343},
		{Local: netip.MustParseAddrPort("[::1]:4789"), Inode: 4444},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("socket %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{{"", "10.0.0.1", true}, {"10.0.0.1", "0.0.0.0", true}, {"10.0.0.1", "::", true}, {"10.0.0.1", "10.0.0.2", false}, {"10.0.0.1", "10.0.0.1", true}} {
		var a netip.Addr
		if tc.a != "" {
			a = netip.MustParseAddr(tc.a)
		}
		if got := overlaps(a, netip.MustParseAddr(tc.b)); got != tc.want {
			t.Errorf("overlaps(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}

// FuzzParseBound: any /proc/net/udp-like text parses without panicking.
func FuzzParseBound(f *testing.F) {
	f.Add([]byte(procUDPSample))
	f.Add([]byte("x\n 1: 0:0 0:0 07 0:0 0:0 0 0 0 1 2 3 4\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range parseBound(b) {
			if !s.Local.IsValid() {
				t.Fatalf("invalid address from %q", b)
			}
		}
	})
}
