package mirrorlab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// LinkStats are a device's counters (ip -s link).
type LinkStats struct {
	RxPackets, RxBytes, RxDropped, RxErrors uint64
	TxPackets, TxBytes, TxDropped, TxErrors uint64
}

// UDPStats is the Udp line of /proc/net/snmp in one namespace.
type UDPStats struct {
	InDatagrams, NoPorts, InErrors, OutDatagrams, RcvbufErrors, SndbufErrors, InCsumErrors uint64
}

// Counters is a snapshot of what the kernel did in a lab.
type Counters struct {
	// Sent is the number of VXLAN mirror packets that left prod toward the
	// target (mir0's transmit counter, after the token bucket; nothing
	// else uses that link: no ARP, no IPv6). Without TBF it equals
	// MirredPackets; with TBF, MirredPackets - TBFDrops.
	Sent uint64
	// VXLAN is the VXLAN device vx0 in prod: TxPackets counts the mirror
	// packets it encapsulated and sent (equal to Sent; TxDropped those the
	// mirror link refused).
	VXLAN LinkStats
	// MirredPackets and MirredBytes sum the tc mirred actions (ingress and
	// egress) on prod0: frames copied to vx0.
	MirredPackets, MirredBytes, MirredDrops uint64
	// Mirror is prod's end of the mirror link (mir0); Target its other end
	// (tgt0) in the target namespace.
	Mirror, Target LinkStats
	// TBFDrops and TBFSent are the token bucket's counters (0 without TBF).
	TBFDrops, TBFSent uint64
	// PathDrops counts mirror packets lost on the mirror link other than
	// by the token bucket: the queue overflowing, or the veth unable to
	// hand a packet to the target namespace. 0 unless the machine is
	// overwhelmed; a test comparing what the target received with Sent is
	// unaffected (Sent excludes them).
	PathDrops uint64
	// TargetUDP is the target namespace's UDP statistics: RcvbufErrors
	// counts datagrams dropped because a socket's receive buffer was full.
	TargetUDP UDPStats
}

// Counters reads the lab's kernel counters.
func (l *Lab) Counters() (Counters, error) {
	var c Counters
	var err error
	if c.VXLAN, err = l.LinkStats(l.Prod, VXLANDev); err != nil {
		return c, err
	}
	if c.Mirror, err = l.LinkStats(l.Prod, MirrorDev); err != nil {
		return c, err
	}
	if c.Target, err = l.LinkStats(l.Target, TargetDev); err != nil {
		return c, err
	}
	c.Sent = c.Mirror.TxPackets
	parents := []string{"ffff:"}
	if !l.Opts.InboundOnly {
		parents = append(parents, "1:")
	}
	for _, p := range parents {
		pk, by, dr, err := l.mirredStats(p)
		if err != nil {
			return c, err
		}
		c.MirredPackets += pk
		c.MirredBytes += by
		c.MirredDrops += dr
	}
	{
		out, err := run("tc", "-n", l.Prod, "-s", "-j", "qdisc", "show", "dev", MirrorDev)
		if err != nil {
			return c, err
		}
		var qs []struct {
			Kind    string `json:"kind"`
			Packets uint64 `json:"packets"`
			Drops   uint64 `json:"drops"`
		}
		if err := json.Unmarshal(out, &qs); err != nil {
			return c, fmt.Errorf("mirrorlab: tc qdisc json: %w", err)
		}
		for _, q := range qs {
			switch q.Kind {
			case "tbf":
				c.TBFDrops, c.TBFSent = q.Drops, q.Packets
			case "pfifo":
				c.PathDrops += q.Drops
			}
		}
		c.PathDrops += c.Mirror.TxDropped
	}
	c.TargetUDP, err = ReadUDPStats(l.Target)
	return c, err
}

// LinkStats reads a device's counters in namespace ns.
func (l *Lab) LinkStats(ns, dev string) (LinkStats, error) {
	var s LinkStats
	out, err := run("ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev)
	if err != nil {
		return s, err
	}
	var links []struct {
		Stats struct {
			Rx struct{ Bytes, Packets, Errors, Dropped uint64 } `json:"rx"`
			Tx struct{ Bytes, Packets, Errors, Dropped uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return s, fmt.Errorf("mirrorlab: ip -s -j link show %s: %v", dev, err)
	}
	st := links[0].Stats
	return LinkStats{
		RxPackets: st.Rx.Packets, RxBytes: st.Rx.Bytes, RxDropped: st.Rx.Dropped, RxErrors: st.Rx.Errors,
		TxPackets: st.Tx.Packets, TxBytes: st.Tx.Bytes, TxDropped: st.Tx.Dropped, TxErrors: st.Tx.Errors,
	}, nil
}

func (l *Lab) mirredStats(parent string) (packets, bytes, drops uint64, err error) {
	out, err := run("tc", "-n", l.Prod, "-s", "-j", "filter", "show", "dev", ProdDev, "parent", parent)
	if err != nil {
		return 0, 0, 0, err
	}
	var fs []struct {
		Options struct {
			Actions []struct {
				Kind  string `json:"kind"`
				Stats struct {
					Bytes, Packets, Drops uint64
				} `json:"stats"`
			} `json:"actions"`
		} `json:"options"`
	}
	if err := json.Unmarshal(out, &fs); err != nil {
		return 0, 0, 0, fmt.Errorf("mirrorlab: tc filter json: %w", err)
	}
	for _, f := range fs {
		for _, a := range f.Options.Actions {
			if a.Kind == "mirred" {
				packets += a.Stats.Packets
				bytes += a.Stats.Bytes
				drops += a.Stats.Drops
			}
		}
	}
	return packets, bytes, drops, nil
}

// ReadUDPStats reads the Udp line of /proc/net/snmp as seen inside ns.
func ReadUDPStats(ns string) (UDPStats, error) {
	b, err := readProcNet(ns, "snmp")
	if err != nil {
		return UDPStats{}, err
	}
	return ParseSNMPUDP(b)
}

// ParseSNMPUDP extracts the Udp counters from the text of /proc/net/snmp.
func ParseSNMPUDP(b []byte) (UDPStats, error) {
	var s UDPStats
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "Udp: "))
		if names == nil {
			names = fields
			continue
		}
		for i, v := range fields {
			if i >= len(names) {
				break
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch names[i] {
			case "InDatagrams":
				s.InDatagrams = n
			case "NoPorts":
				s.NoPorts = n
			case "InErrors":
				s.InErrors = n
			case "OutDatagrams":
				s.OutDatagrams = n
			case "RcvbufErrors":
				s.RcvbufErrors = n
			case "SndbufErrors":
				s.SndbufErrors = n
			case "InCsumErrors":
				s.InCsumErrors = n
			}
		}
		return s, nil
	}
	return s, fmt.Errorf("mirrorlab: no Udp counters in /proc/net/snmp")
}
