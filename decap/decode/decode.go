// Package decode turns what decap receives into inner frames: one outer UDP
// payload (VXLAN or GENEVE, from a socket) or one captured outer frame (from
// a pcap/pcapng file, encapsulated or plain) becomes one framebatch.Frame
// with its flow key. It counts, per VNI and encapsulation, packets, bytes,
// malformed input by reason, truncated inner packets and bad inner
// checksums; it never drops a frame for a bad checksum or truncation and
// never truncates. The hot path does not allocate.
package decode

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/tapline/tapline/decap/geneve"
	"github.com/tapline/tapline/decap/vxlan"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// Config selects the ports and filters of a Decoder.
type Config struct {
	// VXLANPort and GENEVEPort are the UDP destination ports that carry
	// VXLAN and GENEVE. Zero: 4789 and 6081.
	VXLANPort, GENEVEPort uint16
	// VNIs, when not empty, is the allow list of VNIs; frames of other
	// VNIs are dropped and counted (reason "vni").
	VNIs []uint32
	// AllowSrc, when not empty, is the allow list of outer source
	// prefixes; datagrams from elsewhere are dropped and counted (reason
	// "src").
	AllowSrc []netip.Prefix
	// SkipChecksums turns off the inner checksum verification (the
	// bad-checksum counter then stays at zero).
	SkipChecksums bool
	// MaxVNIs, when positive, caps the distinct VNIs whose frames are
	// handed on: the first MaxVNIs VNIs seen (shared by every Decoder of
	// one Stats, see Stats.Admit) are tracked; frames of further VNIs are
	// dropped and counted (reason "vni_cap", label vni="other").
	MaxVNIs int
	// Refused, when not nil, is called with the outer source of every
	// datagram the AllowSrc filter drops (after counting it), e.g. to log
	// a rate-limited warning. It must be cheap and safe for concurrent
	// use.
	Refused func(src netip.Addr)
}

// Packet is one decoded inner frame and its flow.
type Packet struct {
	// Frame is the inner frame. Frame.Data aliases the decoded input.
	Frame framebatch.Frame
	// Key is the inner flow; valid when HasFlow.
	Key flow.Key
	// HasFlow is false for frames that are not IP (ARP, ...) or whose IP
	// headers are broken: they go to shard 0.
	HasFlow bool
}

// Decoder decodes datagrams and captured frames. One Decoder must not be
// used by several goroutines at once; many Decoders may share one Stats.
type Decoder struct {
	cfg      Config
	stats    *Stats
	vniAllow map[uint32]struct{}
	admitted map[uint32]struct{} // VNIs Stats admitted under MaxVNIs (at most MaxVNIs)
	cache    map[statKey]*Counters
	lastKey  statKey
	last     *Counters
	ifaces   map[string]ifaceInfo
}

type ifaceInfo struct {
	ok  bool
	ifc framebatch.Iface
}

// New returns a Decoder counting into stats.
func New(cfg Config, stats *Stats) *Decoder {
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = vxlan.Port
	}
	if cfg.GENEVEPort == 0 {
		cfg.GENEVEPort = geneve.Port
	}
	d := &Decoder{cfg: cfg, stats: stats, cache: map[statKey]*Counters{}}
	if len(cfg.VNIs) > 0 {
		d.vniAllow = map[uint32]struct{}{}
		for _, v := range cfg.VNIs {
			d.vniAllow[v] = struct{}{}
		}
	}
	return d
}

// Stats returns the counters the decoder counts into.
func (d *Decoder) Stats() *Stats { return d.stats }

func (d *Decoder) counters(vni uint32, encap framebatch.Encap) *Counters {
	k := statKey{vni, encap}
	if d.last != nil && d.lastKey == k {
		return d.last
	}
	c := d.cache[k]
	if c == nil {
		if len(d.cache) >= MaxVNIs {
			clear(d.cache) // bounded whatever VNIs arrive
		}
		c = d.stats.For(vni, encap)
		d.cache[k] = c
	}
	d.lastKey, d.last = k, c
	return c
}

func (d *Decoder) malformed(vni int64, encap framebatch.Encap, reason string) bool {
	d.stats.Count(KindMalformed, vni, encap, reason)
	return false
}

// Datagram decodes one outer UDP payload received from src on localPort at
// timeNs into p. It returns false when the datagram was dropped (counted as
// malformed or filtered). p.Frame.Data aliases payload.
func (d *Decoder) Datagram(p *Packet, payload []byte, src netip.Addr, localPort uint16, timeNs int64) bool {
	src = src.Unmap()
	if len(d.cfg.AllowSrc) > 0 && !allowed(d.cfg.AllowSrc, src) {
		d.stats.Count(KindFiltered, -1, encapOfPort(d, localPort), "src")
		if d.cfg.Refused != nil {
			d.cfg.Refused(src)
		}
		return false
	}
	*p = Packet{}
	f := &p.Frame
	f.TimeNs = timeNs
	f.OuterSrc = src
	switch localPort {
	case d.cfg.VXLANPort:
		h, inner, err := vxlan.Parse(payload)
		if err != nil {
			return d.malformed(-1, framebatch.EncapVXLAN, vxlanReason(err))
		}
		f.Encap, f.VNI, f.Link, f.Data = framebatch.EncapVXLAN, h.VNI, flow.LinkEthernet, inner
		return d.finish(p, h.Reserved)
	case d.cfg.GENEVEPort:
		h, inner, err := geneve.Parse(payload)
		if err != nil {
			return d.malformed(-1, framebatch.EncapGENEVE, geneveReason(err))
		}
		f.Encap, f.VNI, f.Data = framebatch.EncapGENEVE, h.VNI, inner
		switch h.Protocol {
		case geneve.ProtoEthernet:
			f.Link = flow.LinkEthernet
		case geneve.ProtoIPv4, geneve.ProtoIPv6:
			f.Link = flow.LinkRaw
		default:
			return d.malformed(int64(h.VNI), framebatch.EncapGENEVE, "geneve_protocol")
		}
		reserved := h.Reserved
		// GENEVE wrapping VXLAN (a Gateway Load Balancer in front of a
		// mirror target): unwrap, and take the VXLAN VNI and the VXLAN
		// packet's source (the mirrored ENI).
		if k, err := flow.Parse(f.Link, inner); err == nil && k.Proto == flow.ProtoUDP && k.DstPort == d.cfg.VXLANPort && !k.Fragment {
			if vx, ok := udpPayload(inner, &k); ok {
				if vh, vin, err := vxlan.Parse(vx); err == nil {
					f.Encap, f.VNI, f.Link, f.Data, f.OuterSrc = framebatch.EncapGENEVEVXLAN, vh.VNI, flow.LinkEthernet, vin, k.Src.Unmap()
					reserved = reserved || vh.Reserved
				}
			}
		}
		return d.finish(p, reserved)
	}
	return d.malformed(-1, framebatch.EncapNone, "port")
}

func encapOfPort(d *Decoder, port uint16) framebatch.Encap {
	switch port {
	case d.cfg.VXLANPort:
		return framebatch.EncapVXLAN
	case d.cfg.GENEVEPort:
		return framebatch.EncapGENEVE
	}
	return framebatch.EncapNone
}

// pcap link types Frame understands besides Ethernet and raw IP.
const (
	linkNull  = 0   // BSD loopback: 4-byte host-order family
	linkRaw12 = 12  // raw IP on some platforms
	linkRaw14 = 14  // raw IP on some platforms
	linkLoop  = 108 // OpenBSD loopback: 4-byte network-order family
	linkSLL   = 113 // Linux cooked capture v1
	linkIPv4  = 228
	linkIPv6  = 229
	linkSLL2  = 276 // Linux cooked capture v2
)

// Frame decodes one captured outer frame of pcap link type linkType. A
// frame carrying UDP to the VXLAN or GENEVE port is decapsulated (outer
// Ethernet with any VLAN tags, IPv4 or IPv6); any other frame is taken as
// already decapsulated: encapsulation none, VNI 0. Loopback and Linux
// cooked frames become raw IP frames. It returns false when the frame was
// dropped (counted). p.Frame.Data aliases frame.
func (d *Decoder) Frame(p *Packet, linkType int, frame []byte, timeNs int64) bool {
	link := flow.LinkEthernet
	data := frame
	switch linkType {
	case int(flow.LinkEthernet):
	case int(flow.LinkRaw), linkRaw12, linkRaw14, linkIPv4, linkIPv6:
		link = flow.LinkRaw
	case linkNull, linkLoop:
		if len(frame) < 4 {
			return d.malformed(-1, framebatch.EncapNone, "short_link_header")
		}
		link, data = flow.LinkRaw, frame[4:]
	case linkSLL:
		if len(frame) < 16 {
			return d.malformed(-1, framebatch.EncapNone, "short_link_header")
		}
		if et := binary.BigEndian.Uint16(frame[14:16]); et != 0x0800 && et != 0x86dd {
			return d.malformed(-1, framebatch.EncapNone, "not_ip")
		}
		link, data = flow.LinkRaw, frame[16:]
	case linkSLL2:
		if len(frame) < 20 {
			return d.malformed(-1, framebatch.EncapNone, "short_link_header")
		}
		if et := binary.BigEndian.Uint16(frame[0:2]); et != 0x0800 && et != 0x86dd {
			return d.malformed(-1, framebatch.EncapNone, "not_ip")
		}
		link, data = flow.LinkRaw, frame[20:]
	default:
		return d.malformed(-1, framebatch.EncapNone, "link_type")
	}
	if k, err := flow.Parse(link, data); err == nil && k.Proto == flow.ProtoUDP && !k.Fragment &&
		(k.DstPort == d.cfg.VXLANPort || k.DstPort == d.cfg.GENEVEPort) {
		payload, ok := udpPayload(data, &k)
		if !ok {
			return d.malformed(-1, encapOfPort(d, k.DstPort), "short_udp")
		}
		return d.Datagram(p, payload, k.Src, k.DstPort, timeNs)
	}
	*p = Packet{}
	p.Frame = framebatch.Frame{TimeNs: timeNs, Encap: framebatch.EncapNone, Link: link, Data: data}
	return d.finish(p, false)
}

// Captured decodes one packet of a capture file whose pcapng interface is
// named ifaceName. A Tapline interface name ("<encap>/<vni>/<outer
// source>", as decap writes in frame batches) on an Ethernet or raw IP
// interface marks an already decapsulated frame: it keeps that
// encapsulation, VNI and outer source, so frames saved from
// TAPLINE_FRAMES (or an archive) read back as they were published. Any
// other packet goes through Frame.
func (d *Decoder) Captured(p *Packet, linkType int, frame []byte, timeNs int64, ifaceName string) bool {
	if ifaceName != "" && (linkType == int(flow.LinkEthernet) || linkType == int(flow.LinkRaw)) {
		info, ok := d.ifaces[ifaceName]
		if !ok {
			if d.ifaces == nil || len(d.ifaces) >= 1024 {
				d.ifaces = map[string]ifaceInfo{}
			}
			ifc, err := framebatch.ParseIfaceName(ifaceName)
			info = ifaceInfo{ok: err == nil, ifc: ifc}
			d.ifaces[ifaceName] = info
		}
		if info.ok {
			*p = Packet{}
			p.Frame = framebatch.Frame{TimeNs: timeNs, VNI: info.ifc.VNI, Encap: info.ifc.Encap, Link: flow.LinkType(linkType), OuterSrc: info.ifc.OuterSrc, Data: frame}
			return d.finish(p, false)
		}
	}
	return d.Frame(p, linkType, frame, timeNs)
}

// udpPayload returns the UDP payload of the packet b whose flow is k, cut
// to the UDP and IP lengths (so Ethernet padding is not taken as payload).
func udpPayload(b []byte, k *flow.Key) ([]byte, bool) {
	start := k.L4Offset + 8
	if k.L4Offset == 0 || len(b) < start {
		return nil, false
	}
	end := len(b)
	if ipEnd := k.L3Offset + k.IPTotalLen; ipEnd < end {
		end = ipEnd
	}
	if ul := int(binary.BigEndian.Uint16(b[k.L4Offset+4:])); ul >= 8 && k.L4Offset+ul < end {
		end = k.L4Offset + ul
	}
	if end < start {
		return nil, false
	}
	return b[start:end], true
}

// finish applies the VNI filter, parses the inner flow and counts.
func (d *Decoder) finish(p *Packet, reserved bool) bool {
	f := &p.Frame
	if d.vniAllow != nil {
		if _, ok := d.vniAllow[f.VNI]; !ok {
			d.stats.Count(KindFiltered, int64(f.VNI), f.Encap, "vni")
			return false
		}
	}
	if d.cfg.MaxVNIs > 0 && !d.admit(f.VNI) {
		d.stats.Count(KindFiltered, OtherVNI, f.Encap, "vni_cap")
		return false
	}
	c := d.counters(f.VNI, f.Encap)
	c.Packets.Add(1)
	c.Bytes.Add(uint64(len(f.Data)))
	if reserved {
		c.Reserved.Add(1)
	}
	f.OrigLen = len(f.Data)
	k, err := flow.Parse(f.Link, f.Data)
	switch {
	case err == nil:
		p.Key, p.HasFlow = k, true
		if k.Truncated(len(f.Data)) {
			c.Truncated.Add(1)
			f.OrigLen = k.L3Offset + k.IPTotalLen
		} else if !d.cfg.SkipChecksums && !checksumsOK(f.Data, &k) {
			c.BadChecksum.Add(1)
		}
	case errors.Is(err, flow.ErrNotIP):
	case errors.Is(err, flow.ErrShort):
		d.stats.Count(KindInnerMalformed, int64(f.VNI), f.Encap, "short")
	default:
		d.stats.Count(KindInnerMalformed, int64(f.VNI), f.Encap, "bad_ip_header")
	}
	return true
}

// admit reports whether frames of vni are tracked under Config.MaxVNIs.
func (d *Decoder) admit(vni uint32) bool {
	if _, ok := d.admitted[vni]; ok {
		return true
	}
	if !d.stats.Admit(vni, d.cfg.MaxVNIs) {
		return false
	}
	if d.admitted == nil {
		d.admitted = map[uint32]struct{}{}
	}
	d.admitted[vni] = struct{}{}
	return true
}

func allowed(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func vxlanReason(err error) string {
	if errors.Is(err, vxlan.ErrFlags) {
		return "vxlan_flags"
	}
	return "vxlan_short"
}

func geneveReason(err error) string {
	switch {
	case errors.Is(err, geneve.ErrVersion):
		return "geneve_version"
	case errors.Is(err, geneve.ErrOption):
		return "geneve_option"
	}
	return "geneve_short"
}
