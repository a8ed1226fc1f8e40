package reassemble

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// synthConn builds the frames of one synthetic TCP connection.
type synthConn struct {
	t        testing.TB
	cli, srv netip.AddrPort
	vni      uint32
	seq      [2]uint32 // next sequence number: client, server
	ns       *int64
}

func newSynthConn(t testing.TB, cli, srv string, vni uint32, clock *int64) *synthConn {
	return &synthConn{t: t, cli: netip.MustParseAddrPort(cli), srv: netip.MustParseAddrPort(srv), vni: vni, seq: [2]uint32{1000, 500000}, ns: clock}
}

// frame builds one Ethernet/IPv4/TCP frame. fromClient selects the
// sender; seq 0 means the sender's next sequence number, which the payload
// (and SYN/FIN) then advance.
func (c *synthConn) frame(fromClient bool, flags string, payload []byte) framebatch.Frame {
	i := 1
	src, dst := c.srv, c.cli
	if fromClient {
		i, src, dst = 0, c.cli, c.srv
	}
	seq := c.seq[i]
	c.seq[i] += uint32(len(payload))
	tc := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Window: 65535}
	for _, f := range flags {
		switch f {
		case 'S':
			tc.SYN = true
			c.seq[i]++
		case 'A':
			tc.ACK = true
		case 'F':
			tc.FIN = true
			c.seq[i]++
		case 'R':
			tc.RST = true
		case 'P':
			tc.PSH = true
		}
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	_ = tc.SetNetworkLayerForChecksum(ip)
	eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tc, gopacket.Payload(payload)); err != nil {
		c.t.Fatal(err)
	}
	*c.ns += 1000
	b := append([]byte(nil), buf.Bytes()...)
	return framebatch.Frame{TimeNs: *c.ns, VNI: c.vni, Encap: framebatch.EncapVXLAN, Link: flow.LinkEthernet, OrigLen: len(b), Data: b}
}

// shardOf returns the shard of a frame as decap computes it.
func shardOf(t testing.TB, f *framebatch.Frame, shards int) int {
	k, err := flow.Parse(f.Link, f.Data)
	if err != nil {
		t.Fatal(err)
	}
	return flow.Shard(k.Hash(), shards)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) * 2654435761
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}
