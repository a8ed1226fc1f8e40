// Package query reads the archive: it lists the chunks whose index can
// match a time range and filter (ls), and writes the matching packets as
// one time-ordered pcapng (query), fetching only the byte ranges of the
// seekable zstd frames that overlap the range.
package query

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tapline/tapline/archive/index"
	"github.com/tapline/tapline/proto/flow"
)

// Filter selects packets. The zero value of a field matches everything;
// ToNs 0 means no upper bound.
type Filter struct {
	// FromNs and ToNs bound capture times: FromNs <= t < ToNs.
	FromNs, ToNs int64
	// VNIs restricts to these VNIs.
	VNIs []uint32
	// Hosts: a packet matches if its source or destination is one of them.
	Hosts []netip.Addr
	// Ports: a packet matches if its source or destination port is one of
	// them.
	Ports []uint16
	// Flows: a packet matches if it belongs to one of them (either
	// direction).
	Flows []FlowSpec
}

// FlowSpec is a bidirectional flow: two endpoints and optionally a
// protocol (0: any).
type FlowSpec struct {
	A, B  netip.AddrPort
	Proto uint8
}

// ParseFlow parses "[tcp:|udp:|<n>:]ADDR:PORT-ADDR:PORT" (IPv6 addresses in
// brackets), e.g. "tcp:10.0.0.1:51000-10.0.0.2:443".
func ParseFlow(s string) (FlowSpec, error) {
	var f FlowSpec
	rest := s
	if p, r, ok := strings.Cut(s, ":"); ok && !strings.HasPrefix(s, "[") {
		switch strings.ToLower(p) {
		case "tcp":
			f.Proto, rest = flow.ProtoTCP, r
		case "udp":
			f.Proto, rest = flow.ProtoUDP, r
		default:
			if n, err := strconv.ParseUint(p, 10, 8); err == nil && strings.Count(r, ":") >= 2 {
				f.Proto, rest = uint8(n), r
			}
		}
	}
	a, b, ok := cutEndpoints(rest)
	if !ok {
		return f, fmt.Errorf("bad flow %q (want e.g. tcp:10.0.0.1:51000-10.0.0.2:443)", s)
	}
	var err error
	if f.A, err = netip.ParseAddrPort(a); err != nil {
		return f, fmt.Errorf("bad flow %q: %v", s, err)
	}
	if f.B, err = netip.ParseAddrPort(b); err != nil {
		return f, fmt.Errorf("bad flow %q: %v", s, err)
	}
	return f, nil
}

// cutEndpoints splits "A:p-B:q" at the dash that follows a port.
func cutEndpoints(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '-' && i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
			if _, err := netip.ParseAddrPort(s[:i]); err == nil {
				return s[:i], s[i+1:], true
			}
		}
	}
	return "", "", false
}

func (f *Filter) hasFlowFilter() bool {
	return len(f.Hosts) > 0 || len(f.Ports) > 0 || len(f.Flows) > 0
}

func (f *Filter) wantVNI(v uint32) bool {
	if len(f.VNIs) == 0 {
		return true
	}
	for _, x := range f.VNIs {
		if x == v {
			return true
		}
	}
	return false
}

func (f *Filter) inTime(t int64) bool {
	return t >= f.FromNs && (f.ToNs == 0 || t < f.ToNs)
}

// overlaps reports whether [a, b] meets the filter's time range.
func (f *Filter) overlaps(a, b int64) bool {
	return b >= f.FromNs && (f.ToNs == 0 || a < f.ToNs)
}

// match applies the host, port and flow filters to a flow.
func (f *Filter) match(src, dst netip.Addr, sp, dp uint16, proto uint8) bool {
	if len(f.Hosts) > 0 {
		ok := false
		for _, h := range f.Hosts {
			if h == src.Unmap() || h == dst.Unmap() {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Ports) > 0 {
		ok := false
		for _, p := range f.Ports {
			if p == sp || p == dp {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Flows) > 0 {
		ok := false
		s, d := netip.AddrPortFrom(src.Unmap(), sp), netip.AddrPortFrom(dst.Unmap(), dp)
		for _, fl := range f.Flows {
			if fl.Proto != 0 && fl.Proto != proto {
				continue
			}
			if (fl.A == s && fl.B == d) || (fl.A == d && fl.B == s) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// matchPacket applies the host, port and flow filters to a frame. A frame
// without an IP flow matches only when there are no such filters.
func (f *Filter) matchPacket(lt flow.LinkType, data []byte) bool {
	if !f.hasFlowFilter() {
		return true
	}
	k, err := flow.Parse(lt, data)
	if err != nil {
		return false
	}
	return f.match(k.Src, k.Dst, k.SrcPort, k.DstPort, k.Proto)
}

// chunkCanMatch uses the index to decide whether a chunk may hold a
// matching packet.
func (f *Filter) chunkCanMatch(x *index.Index) bool {
	if !f.wantVNI(x.VNI) || x.Packets == 0 || !f.overlaps(x.FirstNs, x.LastNs) {
		return false
	}
	if !f.hasFlowFilter() || x.FlowsTruncated {
		return true
	}
	for _, fl := range x.Flows {
		if f.overlaps(fl.FirstNs, fl.LastNs) && f.match(fl.Src, fl.Dst, fl.SrcPort, fl.DstPort, fl.Proto) {
			return true
		}
	}
	return false
}
