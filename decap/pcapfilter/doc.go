// Package pcapfilter compiles tcpdump (pcap-filter(7)) expressions into
// classic BPF programs for Ethernet frames, in pure Go, so a filter can be
// attached to an AF_PACKET socket (SO_ATTACH_FILTER) without libpcap or cgo.
//
// The supported subset:
//
//	primitives  host ADDR, net CIDR, net ADDR mask MASK, port N,
//	            portrange N-M, each with an optional src or dst qualifier
//	            and an optional protocol qualifier (ip, ip6, tcp, udp,
//	            sctp: "tcp dst port 443", "ip6 net fe80::/10");
//	            ip, ip6, arp, tcp, udp, sctp, icmp, icmp6 alone;
//	            inbound, outbound (the AF_PACKET packet type);
//	operators   and (&&), or (||), not (!), parentheses; a bare value
//	            after and/or reuses the previous qualifiers
//	            ("port 80 or 443").
//
// ADDR is an IPv4 or IPv6 address literal (names are not resolved).
// Frames are taken as untagged Ethernet (no VLAN header), as an AF_PACKET
// socket delivers them. Anything else is a clear error, never a silently
// wider or narrower filter.
package pcapfilter
