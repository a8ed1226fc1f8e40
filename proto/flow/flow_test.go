package flow

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// build serialises an Ethernet/IP/TCP packet with gopacket, so the parser is
// checked against an independent encoder.
func build(t testing.TB, src, dst string, sport, dport uint16, vlan bool, payload []byte) []byte {
	t.Helper()
	s, d := net.ParseIP(src), net.ParseIP(dst)
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1, ACK: true, Window: 100}
	var ls []gopacket.SerializableLayer
	var ipType layers.EthernetType
	var ip gopacket.NetworkLayer
	if s.To4() != nil {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: s.To4(), DstIP: d.To4(), Flags: layers.IPv4DontFragment}
		ip, ipType = ip4, layers.EthernetTypeIPv4
		ls = append(ls, ip4)
	} else {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: s, DstIP: d}
		ip, ipType = ip6, layers.EthernetTypeIPv6
		ls = append(ls, ip6)
	}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	head := []gopacket.SerializableLayer{eth}
	if vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		head = append(head, &layers.Dot1Q{VLANIdentifier: 7, Type: ipType})
	} else {
		eth.EthernetType = ipType
	}
	ls = append(append(head, ls...), tcp, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseAndSymmetricHash(t *testing.T) {
	cases := []struct {
		name     string
		src, dst string
		vlan     bool
	}{
		{"ipv4", "10.0.0.1", "10.0.0.2", false},
		{"ipv4 vlan", "192.0.2.1", "198.51.100.7", true},
		{"ipv6", "2001:db8::1", "2001:db8::2", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fwd := build(t, c.src, c.dst, 40000, 443, c.vlan, []byte("hello"))
			rev := build(t, c.dst, c.src, 443, 40000, c.vlan, nil)
			k, err := Parse(LinkEthernet, fwd)
			if err != nil {
				t.Fatal(err)
			}
			if k.Src != netip.MustParseAddr(c.src) || k.Dst != netip.MustParseAddr(c.dst) || k.SrcPort != 40000 || k.DstPort != 443 || k.Proto != ProtoTCP {
				t.Fatalf("parsed %+v", k)
			}
			if k.Truncated(len(fwd)) {
				t.Error("complete packet reported truncated")
			}
			if !k.Truncated(len(fwd) - 3) {
				t.Error("cut packet not reported truncated")
			}
			kr, err := Parse(LinkEthernet, rev)
			if err != nil {
				t.Fatal(err)
			}
			if k.Hash() != kr.Hash() {
				t.Errorf("hash not symmetric: %x vs %x", k.Hash(), kr.Hash())
			}
			other := build(t, c.src, c.dst, 40001, 443, c.vlan, nil)
			ko, _ := Parse(LinkEthernet, other)
			if ko.Hash() == k.Hash() {
				t.Error("different flows hash alike")
			}
			// The same packet without its Ethernet header parses as raw IP.
			off := 14
			if c.vlan {
				off = 18
			}
			kraw, err := Parse(LinkRaw, fwd[off:])
			if err != nil || kraw.Hash() != k.Hash() {
				t.Errorf("raw IP parse: %v, hash %x want %x", err, kraw.Hash(), k.Hash())
			}
		})
	}
}

// TestHashSpec pins the hash to the algorithm written in proto/README.md so
// an implementation in another language can check itself against it.
func TestHashSpec(t *testing.T) {
	k := Key{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.1"), SrcPort: 80, DstPort: 1234, Proto: ProtoTCP}
	var canon []byte
	lo := append(netip.MustParseAddr("::ffff:10.0.0.1").AsSlice(), 1234>>8, 1234&0xff)
	hi := append(netip.MustParseAddr("::ffff:10.0.0.2").AsSlice(), 0, 80)
	canon = append(append(append(canon, lo...), hi...), ProtoTCP)
	h := uint64(14695981039346656037)
	for _, c := range canon {
		h ^= uint64(c)
		h *= 1099511628211
	}
	if k.Hash() != h {
		t.Fatalf("Hash = %x, spec gives %x", k.Hash(), h)
	}
	if Shard(h, 16) != int(h%16) || Shard(h, 1) != 0 {
		t.Fatal("Shard is not hash mod n")
	}
}

func TestFragments(t *testing.T) {
	pkt := build(t, "10.0.0.1", "10.0.0.2", 1000, 2000, false, make([]byte, 100))
	// First fragment: MF set, offset 0.
	first := append([]byte(nil), pkt...)
	first[14+6] = 0x20
	k1, err := Parse(LinkEthernet, first)
	if err != nil || !k1.Fragment || k1.SrcPort != 1000 {
		t.Fatalf("first fragment: %+v %v", k1, err)
	}
	// Later fragment: offset 64 bytes, ports unknown.
	later := append([]byte(nil), pkt...)
	later[14+6], later[14+7] = 0x00, 8
	k2, err := Parse(LinkEthernet, later)
	if err != nil || !k2.Fragment || k2.SrcPort != 0 || k2.FragOffset != 64 {
		t.Fatalf("later fragment: %+v %v", k2, err)
	}
	if k1.Hash() != k2.Hash() {
		t.Error("fragments of one datagram hash differently")
	}
	full, _ := Parse(LinkEthernet, pkt)
	if k1.FiveTupleHash() != full.Hash() {
		t.Error("FiveTupleHash of the first fragment differs from the flow's hash")
	}
}

func TestNotIPAndShort(t *testing.T) {
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	if _, err := Parse(LinkEthernet, arp); err != ErrNotIP {
		t.Errorf("ARP: %v, want ErrNotIP", err)
	}
	pkt := build(t, "10.0.0.1", "10.0.0.2", 1, 2, false, nil)
	for n := 0; n < 14+20+4; n++ {
		if _, err := Parse(LinkEthernet, pkt[:n]); err == nil {
			t.Errorf("%d bytes parsed without error", n)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(uint16(1), build(f, "10.0.0.1", "10.0.0.2", 1, 2, true, []byte("x")))
	f.Add(uint16(1), build(f, "2001:db8::1", "2001:db8::2", 1, 2, false, nil))
	f.Add(uint16(101), []byte{0x60, 0, 0, 0, 0, 8, 44, 64})
	f.Fuzz(func(t *testing.T, lt uint16, b []byte) {
		k, err := Parse(LinkType(lt), b)
		if err != nil {
			return
		}
		if k.L3Offset > len(b) || k.L4Offset > len(b) {
			t.Fatalf("offsets beyond frame: %+v len %d", k, len(b))
		}
		_ = k.Hash()
	})
}

func BenchmarkParseHash(b *testing.B) {
	pkt := build(b, "10.0.0.1", "10.0.0.2", 40000, 443, false, make([]byte, 1400))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		k, _ := Parse(LinkEthernet, pkt)
		_ = Shard(k.Hash(), 16)
	}
}
