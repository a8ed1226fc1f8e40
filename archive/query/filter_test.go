package query

import (
	"net/netip"
	"testing"
)

func TestParseFlow(t *testing.T) {
	good := map[string]FlowSpec{
		"10.0.0.1:51000-10.0.0.2:443":     {A: netip.MustParseAddrPort("10.0.0.1:51000"), B: netip.MustParseAddrPort("10.0.0.2:443")},
		"tcp:10.0.0.1:1-10.0.0.2:2":       {A: netip.MustParseAddrPort("10.0.0.1:1"), B: netip.MustParseAddrPort("10.0.0.2:2"), Proto: 6},
		"udp:[2001:db8::1]:53-[::1]:5353": {A: netip.MustParseAddrPort("[2001:db8::1]:53"), B: netip.MustParseAddrPort("[::1]:5353"), Proto: 17},
		"[2001:db8::1]:53-10.0.0.1:9":     {A: netip.MustParseAddrPort("[2001:db8::1]:53"), B: netip.MustParseAddrPort("10.0.0.1:9")},
		"132:10.0.0.1:1-10.0.0.2:2":       {A: netip.MustParseAddrPort("10.0.0.1:1"), B: netip.MustParseAddrPort("10.0.0.2:2"), Proto: 132},
	}
	for in, want := range good {
		got, err := ParseFlow(in)
		if err != nil || got != want {
			t.Errorf("ParseFlow(%q) = %+v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "10.0.0.1", "10.0.0.1:1", "tcp:x-y", "10.0.0.1:1-"} {
		if _, err := ParseFlow(in); err == nil {
			t.Errorf("ParseFlow(%q) accepted", in)
		}
	}
}

func TestMatch(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	fl, _ := ParseFlow("tcp:10.0.0.2:443-10.0.0.1:5000")
	f := Filter{Hosts: []netip.Addr{a}, Ports: []uint16{443}, Flows: []FlowSpec{fl}}
	if !f.match(a, b, 5000, 443, 6) || !f.match(b, a, 443, 5000, 6) {
		t.Error("both directions should match")
	}
	if f.match(a, b, 5000, 443, 17) || f.match(a, b, 5001, 443, 6) {
		t.Error("wrong protocol or port matched")
	}
	if !(&Filter{}).match(a, b, 1, 2, 6) {
		t.Error("empty filter must match")
	}
	if !(&Filter{FromNs: 10, ToNs: 20}).overlaps(5, 10) || (&Filter{FromNs: 10, ToNs: 20}).overlaps(20, 30) {
		t.Error("overlaps bounds")
	}
}
