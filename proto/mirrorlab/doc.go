// Package mirrorlab builds a Linux kernel imitation of an AWS VPC Traffic
// Mirroring session in network namespaces, for tests and benchmarks.
//
// Three namespaces are created per lab, each with a unique name
// ("tapline-<pid>-<random>") so tests in different packages can run at the
// same time, and connected by veth pairs. Nothing is configured in the root
// namespace: every address and route lives inside the lab's namespaces, and
// all traffic stays between them.
//
//	 ns ext (external system)     ns prod (production host)                  ns target (Tapline)
//	+----------------------+     +---------------------------------------+   +----------------------+
//	| ext0 10.77.1.1/24    |veth | prod0 10.77.1.2/24   (mirrored iface) |   |                      |
//	|  MTU ExtMTU (1500)   |-----|  tc ingress qdisc  + u32 filter ----+ |   |                      |
//	|  TSO/GSO/GRO off     |     |  tc root htb qdisc + u32 filter ----+ |   |                      |
//	+----------------------+     |   action mirred egress mirror dev vx0 |   |                      |
//	                             |                                     | |   |                      |
//	                             | vx0: vxlan id VNI remote 10.77.2.2  <-+   |                      |
//	                             |      local 10.77.2.1 dstport 4789     |   |                      |
//	                             |                 |                     |   |                      |
//	                             | mir0 10.77.2.1/24  pfifo or tbf       |---| tgt0 10.77.2.2/24    |
//	                             |  MTU MirrorMTU (9000)           veth  |   |  UDP :4789 <- decap  |
//	                             +---------------------------------------+   +----------------------+
//
// Every frame prod0 receives from ext (tc ingress) and, unless InboundOnly,
// every frame it sends to ext (tc egress, through a root htb qdisc whose
// unclassified packets go out unshaped) is copied by the mirred action to the
// kernel VXLAN device vx0, which encapsulates it (VNI, outer UDP source port
// from the inner flow hash, UDP checksum 0) and sends it to the target
// namespace, exactly as a mirror session sends to its target. Segmentation
// offloads (TSO/GSO/GRO) are disabled and TCP is limited to one segment per
// packet (gso_max_segs 1) on the ext link, so each mirrored frame is one
// wire-sized packet, as on a real network, and the VXLAN device's counters
// count mirror packets.
//
// The mirror link carries the 1500-byte frames plus 50 bytes of VXLAN
// overhead; its MTU defaults to 9000 (jumbo). It does not lose packets of
// its own: mir0 has a deep fifo queue and tgt0 runs in NAPI mode (GRO on,
// which aggregates nothing for plain UDP sockets), so a slow target
// back-pressures the queue instead of overflowing the kernel's per-CPU
// backlog; any loss a test sees is the target socket's (Counters.PathDrops
// says otherwise). An optional token bucket (tbf) replaces that queue to
// imitate congestion on the mirror path: it drops mirror packets only,
// never the production traffic between ext and prod.
//
// Go code enters a namespace with Do: the function runs on a locked OS
// thread switched into the namespace, so sockets it creates live there (a
// socket stays in the namespace it was created in). Listen, ListenPacket,
// Dial and DialContext are built on it; DialContext fits http.Transport and
// WebSocket dialers. Exec runs a command in a namespace. Counters reads the
// kernel's view: packets the VXLAN device sent, the mirred actions' counts,
// tbf drops, and the target namespace's UDP statistics (/proc/net/snmp,
// including RcvbufErrors) — the figures a loss test compares with what
// Tapline received.
//
// New skips the test (Unavailable: a failure when TAPLINE_REQUIRE_LAB=1) when not root, when ip or tc
// is missing, or when the kernel cannot create a VXLAN device. Namespaces are
// removed by t.Cleanup even when the test fails; namespaces left behind by a
// process that no longer exists (a killed test binary) are removed when the
// next lab starts.
package mirrorlab
