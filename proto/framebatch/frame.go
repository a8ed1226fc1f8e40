// Package framebatch encodes batches of decapsulated frames as pcapng.
//
// One batch is one complete pcapng section: a Section Header Block, an
// Interface Description Block for each distinct (encapsulation, VNI, outer
// source, link type) in the batch, and one Enhanced Packet Block per frame
// with a nanosecond timestamp. Any pcapng reader (Wireshark, tshark,
// libpcap for single-link-type batches, or a few lines of code in any
// language) decodes a batch, and concatenated batches form a valid
// multi-section pcapng file. The exact layout is specified in proto/README.md.
package framebatch

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tapline/tapline/proto/flow"
)

// Encap is how a frame arrived at decap.
type Encap uint8

// Encapsulations.
const (
	EncapNone        Encap = iota // read from a plain capture: already decapsulated
	EncapVXLAN                    // VXLAN, UDP 4789
	EncapGENEVE                   // GENEVE, UDP 6081
	EncapGENEVEVXLAN              // VXLAN carried inside GENEVE
)

var encapNames = [...]string{"none", "vxlan", "geneve", "geneve-vxlan"}

// String returns the name used in interface names: none, vxlan, geneve or
// geneve-vxlan.
func (e Encap) String() string {
	if int(e) < len(encapNames) {
		return encapNames[e]
	}
	return "encap" + strconv.Itoa(int(e))
}

// ParseEncap is the inverse of Encap.String.
func ParseEncap(s string) (Encap, error) {
	for i, n := range encapNames {
		if n == s {
			return Encap(i), nil
		}
	}
	return 0, fmt.Errorf("framebatch: unknown encapsulation %q", s)
}

// Frame is one decapsulated (inner) frame and what decap knew about it.
type Frame struct {
	// TimeNs is the capture time in nanoseconds since the Unix epoch.
	TimeNs int64
	// VNI is the VXLAN/GENEVE virtual network identifier (0 for EncapNone).
	VNI uint32
	// Encap is how the frame arrived.
	Encap Encap
	// Link is the frame's link layer: Ethernet, or raw IP for GENEVE
	// carrying IP directly (AWS Gateway Load Balancer).
	Link flow.LinkType
	// OuterSrc is the outer (tunnel) source address: the mirrored ENI for
	// AWS Traffic Mirroring. Invalid when unknown.
	OuterSrc netip.Addr
	// OrigLen is the frame's length on the wire. It exceeds len(Data) when
	// the mirror truncated the packet.
	OrigLen int
	// Data is the captured frame. After Reader.Next it aliases the batch.
	Data []byte
}

// Iface is the per-interface part of a frame: everything but time, lengths
// and bytes. Each distinct Iface in a batch gets one Interface Description
// Block.
type Iface struct {
	Encap    Encap
	VNI      uint32
	OuterSrc netip.Addr
	Link     flow.LinkType
}

// Iface returns the interface the frame belongs to.
func (f *Frame) Iface() Iface {
	return Iface{Encap: f.Encap, VNI: f.VNI, OuterSrc: f.OuterSrc, Link: f.Link}
}

// Name is the if_name option of the interface:
// "<encap>/<vni>/<outer source>", e.g. "vxlan/5569041/172.31.0.238"; the
// outer source is empty when unknown.
func (i Iface) Name() string {
	src := ""
	if i.OuterSrc.IsValid() {
		src = i.OuterSrc.String()
	}
	return i.Encap.String() + "/" + strconv.FormatUint(uint64(i.VNI), 10) + "/" + src
}

// ParseIfaceName is the inverse of Iface.Name (the link type is not part of
// the name and is left zero).
func ParseIfaceName(name string) (Iface, error) {
	var i Iface
	parts := strings.Split(name, "/")
	if len(parts) != 3 {
		return i, fmt.Errorf("framebatch: interface name %q is not <encap>/<vni>/<outer source>", name)
	}
	e, err := ParseEncap(parts[0])
	if err != nil {
		return i, err
	}
	v, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return i, fmt.Errorf("framebatch: interface name %q: bad VNI", name)
	}
	i.Encap, i.VNI = e, uint32(v)
	if parts[2] != "" {
		if i.OuterSrc, err = netip.ParseAddr(parts[2]); err != nil {
			return i, fmt.Errorf("framebatch: interface name %q: bad outer source", name)
		}
	}
	return i, nil
}
