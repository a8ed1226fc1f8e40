package pcapfilter

import (
	"net/netip"

	"golang.org/x/net/bpf"
)

// Ethernet frame offsets (untagged).
const (
	offEtherType = 12
	offIP4Frag   = 14 + 6
	offIP4Proto  = 14 + 9
	offIP4Src    = 14 + 12
	offIP4Dst    = 14 + 16
	offIP6Next   = 14 + 6
	offIP6Src    = 14 + 8
	offIP6Dst    = 14 + 24
	offIP6L4     = 14 + 40
	offARPSender = 14 + 14
	offARPTarget = 14 + 24
)

// IP protocol numbers.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMP6  = 58
	protoSCTP   = 132
	packetOut   = 4 // PACKET_OUTGOING, the AF_PACKET packet type of a sent frame
	maxInsns    = 4096
	jumpLimit   = 255
	defaultSnap = 262144
)

// loadKind says where an atom's value comes from.
type loadKind int

const (
	loadAbs  loadKind = iota // the frame at a fixed offset
	loadIPv4                 // past the IPv4 header (X = its length), then off
	loadType                 // the AF_PACKET packet type
)

// atom loads one value and tests it: a leaf of the expression.
type atom struct {
	load loadKind
	off  uint32
	size int
	mask uint32 // ANDed before the test when non-zero
	cond bpf.JumpTest
	val  uint32
}

// trueNode matches every frame.
type trueNode struct{}

func (atom) isNode()     {}
func (trueNode) isNode() {}

func and(ns ...node) node {
	var out node
	for _, n := range ns {
		if _, ok := n.(trueNode); ok {
			continue
		}
		if out == nil {
			out = n
		} else {
			out = andNode{out, n}
		}
	}
	if out == nil {
		return trueNode{}
	}
	return out
}

func or(ns ...node) node {
	out := ns[0]
	for _, n := range ns[1:] {
		out = orNode{out, n}
	}
	return out
}

func eq(off uint32, size int, val uint32) atom {
	return atom{load: loadAbs, off: off, size: size, cond: bpf.JumpEqual, val: val}
}

func etherType(t uint32) node { return eq(offEtherType, 2, t) }

var (
	isIP4 = etherType(0x0800)
	isIP6 = etherType(0x86dd)
)

// l4 matches IPv4 (fam 4) or IPv6 (fam 6) frames of one IP protocol (the
// IPv6 next header of the fixed header).
func l4(fam int, proto uint32) node {
	if fam == 4 {
		return and(isIP4, eq(offIP4Proto, 1, proto))
	}
	return and(isIP6, eq(offIP6Next, 1, proto))
}

var protoNums = map[string]uint32{"tcp": protoTCP, "udp": protoUDP, "sctp": protoSCTP}

// protoOnly is a protocol name used alone ("tcp", "ip6").
func protoOnly(p string) node {
	switch p {
	case "ip":
		return isIP4
	case "ip6":
		return isIP6
	}
	n := protoNums[p]
	return or(l4(4, n), l4(6, n))
}

func pktType(out bool) node {
	a := atom{load: loadType, cond: bpf.JumpEqual, val: packetOut}
	if out {
		return a
	}
	return notNode{a}
}

func srcDst(dir string, src, dst node) node {
	switch dir {
	case "src":
		return src
	case "dst":
		return dst
	}
	return or(src, dst)
}

// addrMatch matches frames whose source or destination (dir) address is in
// pre (only IPv4 or IPv6 frames when proto is "ip" or "ip6").
func addrMatch(proto, dir string, pre netip.Prefix) node {
	b := pre.Addr().AsSlice()
	if pre.Addr().Is4() {
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		ip := and(isIP4, srcDst(dir, prefixWords(offIP4Src, v, pre.Bits()), prefixWords(offIP4Dst, v, pre.Bits())))
		if proto == "ip" {
			return ip
		}
		// Unqualified, an IPv4 host or net also matches ARP and RARP
		// sender / target protocol addresses, as in libpcap.
		arp := func(t uint32) node {
			return and(etherType(t), srcDst(dir, prefixWords(offARPSender, v, pre.Bits()), prefixWords(offARPTarget, v, pre.Bits())))
		}
		return or(ip, arp(0x0806), arp(0x8035))
	}
	words := func(base uint32) node {
		var ns []node
		for i := 0; i < 4; i++ {
			bits := min(max(pre.Bits()-32*i, 0), 32)
			v := uint32(b[4*i])<<24 | uint32(b[4*i+1])<<16 | uint32(b[4*i+2])<<8 | uint32(b[4*i+3])
			ns = append(ns, prefixWords(base+uint32(4*i), v, bits))
		}
		return and(ns...)
	}
	return and(isIP6, srcDst(dir, words(offIP6Src), words(offIP6Dst)))
}

// prefixWords matches the 32-bit word at off against the first bits of v.
func prefixWords(off, v uint32, bits int) node {
	if bits == 0 {
		return trueNode{}
	}
	a := eq(off, 4, v)
	if bits < 32 {
		a.mask = ^uint32(0) << (32 - bits)
		a.val = v & a.mask
	}
	return a
}

// portMatch matches TCP, UDP or SCTP (or only proto's) frames over IPv4 or
// IPv6 (or only proto's family) whose source or destination port is in
// [lo, hi]. IPv4 fragments after the first carry no ports and never match.
func portMatch(proto, dir string, lo, hi uint16) node {
	l4s := []string{"tcp", "udp", "sctp"}
	if protoNums[proto] != 0 {
		l4s = []string{proto}
	}
	var fams []node
	if proto != "ip6" {
		var ps []node
		for _, p := range l4s {
			ps = append(ps, eq(offIP4Proto, 1, protoNums[p]))
		}
		port := func(off uint32) node { return portTest(atom{load: loadIPv4, off: off, size: 2}, lo, hi) }
		notFrag := notNode{atom{load: loadAbs, off: offIP4Frag, size: 2, cond: bpf.JumpBitsSet, val: 0x1fff}}
		fams = append(fams, and(isIP4, or(ps...), notFrag, srcDst(dir, port(0), port(2))))
	}
	if proto != "ip" {
		var ps []node
		for _, p := range l4s {
			ps = append(ps, eq(offIP6Next, 1, protoNums[p]))
		}
		port := func(off uint32) node {
			return portTest(atom{load: loadAbs, off: offIP6L4 + off, size: 2}, lo, hi)
		}
		fams = append(fams, and(isIP6, or(ps...), srcDst(dir, port(0), port(2))))
	}
	return or(fams...)
}

func portTest(a atom, lo, hi uint16) node {
	if lo == hi {
		a.cond, a.val = bpf.JumpEqual, uint32(lo)
		return a
	}
	ge, gt := a, a
	ge.cond, ge.val = bpf.JumpGreaterOrEqual, uint32(lo)
	gt.cond, gt.val = bpf.JumpGreaterThan, uint32(hi)
	return and(ge, notNode{gt})
}
