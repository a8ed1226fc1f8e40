package decode

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tapline/tapline/decap/geneve"
	"github.com/tapline/tapline/decap/vxlan"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// tcpFrame builds an Ethernet/IPv4/TCP frame with correct checksums
// (gopacket computes them, independently of this package).
func tcpFrame(t testing.TB, src, dst string, sport, dport uint16, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4(), Id: 7}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1000, ACK: true, PSH: true, Window: 512}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// udpOuter wraps payload in Ethernet/IPv4/UDP to dport (checksum 0).
func udpOuter(t testing.TB, src, dst string, dport uint16, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 4}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 255, Protocol: layers.IPProtocolUDP, SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
	udp := &layers.UDP{SrcPort: 65445, DstPort: layers.UDPPort(dport)}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

var src = netip.MustParseAddr("172.31.0.238")

func TestVXLANDatagram(t *testing.T) {
	st := NewStats()
	d := New(Config{}, st)
	inner := tcpFrame(t, "10.0.0.1", "10.0.0.2", 40000, 80, []byte("GET / HTTP/1.1\r\n\r\n"))
	var p Packet
	if !d.Datagram(&p, append(vxlan.Append(nil, 42), inner...), src, 4789, 123) {
		t.Fatal("dropped")
	}
	f := p.Frame
	if f.VNI != 42 || f.Encap != framebatch.EncapVXLAN || f.Link != flow.LinkEthernet || f.OuterSrc != src || f.TimeNs != 123 || f.OrigLen != len(inner) || !bytes.Equal(f.Data, inner) || !p.HasFlow || p.Key.DstPort != 80 {
		t.Fatalf("got %+v", p)
	}
	tot := st.Totals()
	if tot.Packets != 1 || tot.Bytes != uint64(len(inner)) || tot.BadChecksum != 0 || tot.Truncated != 0 || tot.Reserved != 0 {
		t.Fatalf("totals %+v", tot)
	}
}

func TestGENEVEWrappingVXLAN(t *testing.T) {
	st := NewStats()
	d := New(Config{}, st)
	inner := tcpFrame(t, "10.0.0.1", "10.0.0.2", 40000, 80, []byte("hello"))
	// The VXLAN packet the mirror sent to a GWLB endpoint...
	vx := udpOuter(t, "172.31.9.9", "172.31.1.1", 4789, append(vxlan.Append(nil, 77), inner...))
	// ...carried by the GWLB as raw IPv4 in GENEVE with AWS options.
	gen := append(geneve.Append(nil, geneve.ProtoIPv4, 0, geneve.AWSOptions(1, 2, 3)...), vx[14:]...)
	var p Packet
	if !d.Datagram(&p, gen, netip.MustParseAddr("10.9.9.9"), 6081, 1) {
		t.Fatal("dropped")
	}
	f := p.Frame
	if f.Encap != framebatch.EncapGENEVEVXLAN || f.VNI != 77 || f.OuterSrc.String() != "172.31.9.9" || f.Link != flow.LinkEthernet || !bytes.Equal(f.Data, inner) {
		t.Fatalf("got %+v %x", f.Iface(), f.Data)
	}
	// Plain GWLB: raw IPv4 inner, link raw.
	gen = append(geneve.Append(nil, geneve.ProtoIPv4, 9, geneve.AWSOptions(1, 2, 3)...), inner[14:]...)
	if !d.Datagram(&p, gen, netip.MustParseAddr("10.9.9.9"), 6081, 1) || p.Frame.Link != flow.LinkRaw || p.Frame.Encap != framebatch.EncapGENEVE || !bytes.Equal(p.Frame.Data, inner[14:]) || p.Key.DstPort != 80 {
		t.Fatalf("raw inner: %+v", p.Frame.Iface())
	}
	if st.Totals().BadChecksum != 0 {
		t.Fatal("checksums of gopacket-built frames judged bad")
	}
}

func TestTruncatedAndBadChecksumKept(t *testing.T) {
	st := NewStats()
	d := New(Config{}, st)
	inner := tcpFrame(t, "10.0.0.1", "10.0.0.2", 40000, 80, bytes.Repeat([]byte("x"), 1000))
	var p Packet
	// Truncated by the mirror to 200 bytes.
	if !d.Datagram(&p, append(vxlan.Append(nil, 1), inner[:200]...), src, 4789, 0) || p.Frame.OrigLen != len(inner) || len(p.Frame.Data) != 200 {
		t.Fatalf("truncated: orig %d len %d", p.Frame.OrigLen, len(p.Frame.Data))
	}
	// A flipped payload byte: bad TCP checksum, kept.
	bad := bytes.Clone(inner)
	bad[len(bad)-1] ^= 0xff
	if !d.Datagram(&p, append(vxlan.Append(nil, 1), bad...), src, 4789, 0) || !bytes.Equal(p.Frame.Data, bad) {
		t.Fatal("bad checksum frame dropped")
	}
	// A bad IPv4 header checksum.
	bad = bytes.Clone(inner)
	bad[14+10] ^= 0x01
	if !d.Datagram(&p, append(vxlan.Append(nil, 1), bad...), src, 4789, 0) {
		t.Fatal("dropped")
	}
	tot := st.Totals()
	if tot.Truncated != 1 || tot.BadChecksum != 2 || tot.Packets != 3 {
		t.Fatalf("totals %+v", tot)
	}
}

func TestFilters(t *testing.T) {
	st := NewStats()
	d := New(Config{VNIs: []uint32{5}, AllowSrc: []netip.Prefix{netip.MustParsePrefix("172.31.0.0/16")}}, st)
	inner := tcpFrame(t, "10.0.0.1", "10.0.0.2", 1, 2, nil)
	var p Packet
	if !d.Datagram(&p, append(vxlan.Append(nil, 5), inner...), src, 4789, 0) {
		t.Fatal("allowed datagram dropped")
	}
	if d.Datagram(&p, append(vxlan.Append(nil, 6), inner...), src, 4789, 0) {
		t.Fatal("VNI 6 passed")
	}
	if d.Datagram(&p, append(vxlan.Append(nil, 5), inner...), netip.MustParseAddr("::ffff:10.1.1.1"), 4789, 0) {
		t.Fatal("source 10.1.1.1 passed")
	}
	tot := st.Totals()
	if tot.Packets != 1 || tot.Filtered["vni"] != 1 || tot.Filtered["src"] != 1 {
		t.Fatalf("totals %+v", tot)
	}
}

// TestBadInput: short datagrams, wrong flags, garbage and a 64 KiB datagram
// are counted or kept whole, never a crash.
func TestBadInput(t *testing.T) {
	st := NewStats()
	d := New(Config{}, st)
	var p Packet
	for n := 0; n < 8; n++ {
		if d.Datagram(&p, make([]byte, n), src, 4789, 0) || d.Datagram(&p, make([]byte, n), src, 6081, 0) {
			t.Fatalf("%d-byte datagram accepted", n)
		}
	}
	if d.Datagram(&p, []byte{0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3}, src, 4789, 0) {
		t.Fatal("VXLAN without I flag accepted")
	}
	if d.Datagram(&p, []byte{0xc0, 0, 0x65, 0x58, 0, 0, 1, 0}, src, 6081, 0) {
		t.Fatal("GENEVE version 3 accepted")
	}
	if d.Datagram(&p, []byte{0, 0, 0x12, 0x34, 0, 0, 1, 0}, src, 6081, 0) {
		t.Fatal("GENEVE protocol 0x1234 accepted")
	}
	// Garbage after a valid header: kept, inner counted as malformed.
	garbage := append(vxlan.Append(nil, 3), 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x00, 0x45)
	if !d.Datagram(&p, garbage, src, 4789, 0) || p.HasFlow {
		t.Fatal("garbage inner frame not kept without flow")
	}
	// A 64 KiB datagram is kept whole.
	big := tcpFrame(t, "10.0.0.1", "10.0.0.2", 1, 2, make([]byte, 65535-8-14-40))
	dg := append(vxlan.Append(nil, 3), big...)
	if len(dg) != 65535-8+8 && len(dg) < 65000 {
		t.Fatalf("datagram %d bytes", len(dg))
	}
	if !d.Datagram(&p, dg, src, 4789, 0) || len(p.Frame.Data) != len(big) {
		t.Fatal("64 KiB datagram not kept whole")
	}
	tot := st.Totals()
	if tot.Malformed["vxlan_short"] != 8 || tot.Malformed["geneve_short"] != 8 || tot.Malformed["vxlan_flags"] != 1 || tot.Malformed["geneve_version"] != 1 || tot.Malformed["geneve_protocol"] != 1 {
		t.Fatalf("malformed %v", tot.Malformed)
	}
	if tot.InnerMalformed["short"] != 1 {
		t.Fatalf("inner malformed %v", tot.InnerMalformed)
	}
}

func TestOuterFrame(t *testing.T) {
	st := NewStats()
	d := New(Config{}, st)
	inner := tcpFrame(t, "10.0.0.1", "10.0.0.2", 1, 2, []byte("abc"))
	outer := udpOuter(t, "172.31.0.238", "172.31.17.188", 4789, append(vxlan.Append(nil, 9), inner...))
	// Ethernet padding after the outer packet is not part of the inner frame.
	padded := append(bytes.Clone(outer), 0, 0, 0, 0)
	var p Packet
	if !d.Frame(&p, 1, padded, 5) || !bytes.Equal(p.Frame.Data, inner) || p.Frame.VNI != 9 || p.Frame.OuterSrc != src {
		t.Fatalf("got %+v", p.Frame.Iface())
	}
	// Linux cooked capture of the same packet.
	sll := append(make([]byte, 14), 0x08, 0x00)
	sll = append(sll, outer[14:]...)
	if !d.Frame(&p, 113, sll, 5) || !bytes.Equal(p.Frame.Data, inner) {
		t.Fatal("SLL outer frame")
	}
	// A plain frame is taken as decapsulated.
	if !d.Frame(&p, 1, inner, 5) || p.Frame.Encap != framebatch.EncapNone || p.Frame.VNI != 0 || !bytes.Equal(p.Frame.Data, inner) {
		t.Fatal("plain frame")
	}
	// Loopback (DLT_NULL) becomes raw IP.
	null := append([]byte{2, 0, 0, 0}, inner[14:]...)
	if !d.Frame(&p, 0, null, 5) || p.Frame.Link != flow.LinkRaw || !bytes.Equal(p.Frame.Data, inner[14:]) {
		t.Fatal("loopback frame")
	}
	if d.Frame(&p, 12345, inner, 5) || d.Frame(&p, 113, inner[:3], 5) {
		t.Fatal("unknown link type or short header accepted")
	}
	// A UDP header claiming more than there is: cut to what was captured.
	short := bytes.Clone(outer)
	binary.BigEndian.PutUint16(short[14+20+4:], 60000)
	if !d.Frame(&p, 1, short, 5) || !bytes.Equal(p.Frame.Data, inner) {
		t.Fatal("long UDP length")
	}
}

func FuzzOuterFrame(f *testing.F) {
	inner := tcpFrame(f, "10.0.0.1", "10.0.0.2", 1, 2, []byte("abc"))
	f.Add(uint16(1), udpOuter(f, "1.2.3.4", "5.6.7.8", 4789, append(vxlan.Append(nil, 9), inner...)))
	f.Add(uint16(1), udpOuter(f, "1.2.3.4", "5.6.7.8", 6081, append(geneve.Append(nil, geneve.ProtoIPv4, 1, geneve.AWSOptions(1, 2, 3)...), inner[14:]...)))
	vx := udpOuter(f, "172.31.9.9", "172.31.1.1", 4789, append(vxlan.Append(nil, 77), inner...))
	f.Add(uint16(1), udpOuter(f, "1.2.3.4", "5.6.7.8", 6081, append(geneve.Append(nil, geneve.ProtoIPv4, 1), vx[14:]...)))
	f.Add(uint16(1), inner)
	f.Add(uint16(0), append([]byte{2, 0, 0, 0}, inner[14:]...))
	f.Add(uint16(113), make([]byte, 20))
	f.Fuzz(func(t *testing.T, link uint16, b []byte) {
		d := New(Config{}, NewStats())
		var p Packet
		if d.Frame(&p, int(link), b, 0) {
			if len(p.Frame.Data) > len(b) || p.Frame.OrigLen < len(p.Frame.Data) {
				t.Fatalf("frame of %d bytes from %d, orig %d", len(p.Frame.Data), len(b), p.Frame.OrigLen)
			}
		}
		// As a frame of a Tapline pcapng interface, and as a datagram on
		// either port.
		if d.Captured(&p, int(link), b, 0, "geneve-vxlan/7/10.0.0.1") && (link == 1 || link == 101) && (p.Frame.VNI != 7 || len(p.Frame.Data) != len(b)) {
			t.Fatalf("tapline interface frame %+v", p.Frame.Iface())
		}
		d.Datagram(&p, b, src, 4789, 0)
		d.Datagram(&p, b, src, 6081, 0)
	})
}

func TestIPv6Outer(t *testing.T) {
	d := New(Config{}, NewStats())
	inner := tcpFrame(t, "10.0.0.1", "10.0.0.2", 1, 2, []byte("v6 outer"))
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 4}, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2")}
	udp := &layers.UDP{SrcPort: 50000, DstPort: 6081}
	_ = udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	payload := append(geneve.Append(nil, geneve.ProtoEthernet, 0xabcdef), inner...)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	var p Packet
	if !d.Frame(&p, 1, buf.Bytes(), 1) || p.Frame.VNI != 0xabcdef || p.Frame.OuterSrc.String() != "2001:db8::1" || !bytes.Equal(p.Frame.Data, inner) {
		t.Fatalf("got %+v", p.Frame.Iface())
	}
}

// TestSumMatchesReference compares the 64-bit checksum sum with the
// textbook 16-bit one on every length up to 300 and random contents.
func TestSumMatchesReference(t *testing.T) {
	b := make([]byte, 300)
	for i := range b {
		b[i] = byte(i*131 + 7)
	}
	b[10], b[11] = 0xff, 0xff
	for n := 0; n <= len(b); n++ {
		var ref uint32
		for i := 0; i+1 < n; i += 2 {
			ref += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if n%2 == 1 {
			ref += uint32(b[n-1]) << 8
		}
		for ref>>16 != 0 {
			ref = ref&0xffff + ref>>16
		}
		if got := fold(sum(0, b[:n])); uint32(got) != ref {
			t.Fatalf("length %d: %#x want %#x", n, got, ref)
		}
	}
}

// TestManyVNIsBounded: a spray of distinct VNIs does not grow the counters
// past MaxVNIs series; the rest are counted as vni "other".
func TestManyVNIsBounded(t *testing.T) {
	st := NewStats()
	d := New(Config{}, st)
	inner := tcpFrame(t, "10.0.0.1", "10.0.0.2", 1, 2, nil)
	var p Packet
	for v := uint32(0); v < MaxVNIs+500; v++ {
		d.Datagram(&p, append(vxlan.Append(nil, v), inner...), src, 4789, 0)
	}
	tot := st.Totals()
	if len(st.per) != MaxVNIs+1 || tot.PacketsByVNI["vxlan/other"] != 500 || tot.Packets != MaxVNIs+500 {
		t.Fatalf("%d series, other %d, packets %d", len(st.per), tot.PacketsByVNI["vxlan/other"], tot.Packets)
	}
	if len(d.cache) > MaxVNIs {
		t.Fatalf("decoder cache %d", len(d.cache))
	}
}
