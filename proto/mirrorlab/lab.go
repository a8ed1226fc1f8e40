package mirrorlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Options shape a lab. The zero value is a usable default: VNI 4242, both
// directions mirrored, a 1500-byte production link and a 9000-byte mirror
// link, no congestion.
type Options struct {
	// VNI of the VXLAN device (the mirror session's virtual network ID).
	// 0 means 4242.
	VNI uint32
	// DstPort is the VXLAN destination UDP port. 0 means 4789.
	DstPort int
	// InboundOnly mirrors only what prod receives from ext (tc ingress), as
	// a session that mirrors one direction.
	InboundOnly bool
	// ExtMTU is the MTU of the mirrored ext<->prod link. 0 means 1500.
	ExtMTU int
	// MirrorMTU is the MTU of the prod->target mirror link; it must carry a
	// mirrored frame plus 50 bytes of VXLAN overhead. 0 means 9000, or
	// ExtMTU+64 for a jumbo ExtMTU.
	MirrorMTU int
	// TBF, when set, shapes the mirror link (prod->target egress) with a
	// token bucket so mirror packets, and only they, are dropped under
	// load.
	TBF *TBF
	// DeferMirror builds the lab without the mirred filters: nothing is
	// mirrored until StartMirror, so mirroring can start in the middle of
	// a connection.
	DeferMirror bool
}

// TBF is a tc token bucket (tc-tbf(8)); the strings use tc's syntax.
type TBF struct {
	Rate  string // e.g. "200mbit"
	Burst string // e.g. "64kb"
	Limit string // queue bytes, e.g. "128kb"
}

// Fixed addresses inside the lab's namespaces. They never appear in the
// root namespace, so every lab (and concurrent labs) can use the same ones.
var (
	ExtAddr    = netip.MustParseAddr("10.77.1.1") // ext0, in ext
	ProdAddr   = netip.MustParseAddr("10.77.1.2") // prod0, in prod (the mirrored interface)
	MirrorSrc  = netip.MustParseAddr("10.77.2.1") // mir0, in prod: outer source of the VXLAN packets
	TargetAddr = netip.MustParseAddr("10.77.2.2") // tgt0, in target: where Tapline listens
)

// Interface names inside the namespaces.
const (
	ExtDev    = "ext0" // ext's end of the production link
	ProdDev   = "prod0"
	MirrorDev = "mir0" // prod's end of the mirror link
	TargetDev = "tgt0"
	VXLANDev  = "vx0"
)

var (
	macExt    = "02:77:00:00:01:01"
	macProd   = "02:77:00:00:01:02"
	macMirror = "02:77:00:00:02:01"
	macTarget = "02:77:00:00:02:02"
)

// mirrorQueue is the packet limit of the mirror link's queue without TBF.
const mirrorQueue = 500000

// Lab is one set of namespaces imitating a mirror session.
type Lab struct {
	// Namespace names (under /run/netns), for Do, Exec, Listen, Dial.
	Ext, Prod, Target string
	// VNI and DstPort of the mirror.
	VNI     uint32
	DstPort int
	// Opts are the options the lab was built with (defaults filled in).
	Opts Options

	created []string
	filters [][]string // mirred filters not added yet (DeferMirror)
}

// Available says why a lab cannot be built here (nil if it can): not root,
// or ip / tc missing. Whether the kernel has VXLAN is only known when the
// lab is built.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("mirrorlab: needs root (network namespaces, VXLAN, tc)")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("mirrorlab: %s (iproute2) not found in PATH", tool)
		}
	}
	if _, err := os.Stat("/proc/thread-self/ns/net"); err != nil {
		return fmt.Errorf("mirrorlab: no network namespace support: %v", err)
	}
	return nil
}

// ErrNoVXLAN is wrapped by Setup's error when the kernel cannot create a
// VXLAN device.
var ErrNoVXLAN = errors.New("mirrorlab: kernel VXLAN unavailable")

// New builds a lab for a test and removes it when the test ends (even on
// failure). It skips the test when the lab cannot run here.
func New(t testing.TB, o Options) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		Unavailable(t, err.Error())
	}
	l, err := Setup(o)
	if errors.Is(err, ErrNoVXLAN) {
		Unavailable(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("mirrorlab cleanup: %v", err)
		}
	})
	return l
}

// Setup builds a lab outside a test (a benchmark script, a tool). The caller
// must Close it. On error nothing is left behind.
func Setup(o Options) (l *Lab, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if o.VNI == 0 {
		o.VNI = 4242
	}
	if o.DstPort == 0 {
		o.DstPort = 4789
	}
	if o.ExtMTU == 0 {
		o.ExtMTU = 1500
	}
	if o.MirrorMTU == 0 {
		o.MirrorMTU = max(9000, o.ExtMTU+14+50)
	}
	if o.MirrorMTU < o.ExtMTU+14+50 {
		return nil, fmt.Errorf("mirrorlab: MirrorMTU %d cannot carry %d-byte frames plus 50 bytes of VXLAN", o.MirrorMTU, o.ExtMTU+14)
	}
	RemoveLeftovers()
	l = &Lab{VNI: o.VNI, DstPort: o.DstPort, Opts: o}
	defer func() {
		if err != nil {
			_ = l.Close()
			l = nil
		}
	}()
	for _, p := range []*string{&l.Ext, &l.Prod, &l.Target} {
		role := map[*string]string{&l.Ext: "ext", &l.Prod: "prod", &l.Target: "target"}[p]
		*p = newName(role)
		if err := addNS(*p); err != nil {
			return l, err
		}
		l.created = append(l.created, *p)
		// No IPv6: router solicitations and MLD reports would be mirrored
		// as noise. Kernels without IPv6 have no such sysctl.
		_ = writeSysctl(*p, "net.ipv6.conf.all.disable_ipv6", "1")
		_ = writeSysctl(*p, "net.ipv6.conf.default.disable_ipv6", "1")
		if err := l.ip(*p, "link", "set", "lo", "up"); err != nil {
			return l, err
		}
	}
	mtu := func(n int) string { return strconv.Itoa(n) }
	steps := [][]string{
		// Production link ext0 <-> prod0.
		{l.Ext, "link", "add", "name", ExtDev, "mtu", mtu(o.ExtMTU), "address", macExt, "type", "veth",
			"peer", "name", ProdDev, "mtu", mtu(o.ExtMTU), "address", macProd, "netns", l.Prod},
		// Mirror link mir0 <-> tgt0.
		{l.Prod, "link", "add", "name", MirrorDev, "mtu", mtu(o.MirrorMTU), "address", macMirror, "type", "veth",
			"peer", "name", TargetDev, "mtu", mtu(o.MirrorMTU), "address", macTarget, "netns", l.Target},
		{l.Ext, "addr", "add", ExtAddr.String() + "/24", "dev", ExtDev},
		{l.Prod, "addr", "add", ProdAddr.String() + "/24", "dev", ProdDev},
		{l.Prod, "addr", "add", MirrorSrc.String() + "/24", "dev", MirrorDev},
		{l.Target, "addr", "add", TargetAddr.String() + "/24", "dev", TargetDev},
	}
	for _, s := range steps {
		if err := l.ip(s[0], s[1:]...); err != nil {
			return l, err
		}
	}
	for _, d := range [][2]string{{l.Ext, ExtDev}, {l.Prod, ProdDev}, {l.Prod, MirrorDev}} {
		if err := setOffloads(d[0], d[1], false); err != nil {
			return l, err
		}
	}
	// GRO on tgt0 puts the mirror link in NAPI mode: mir0 then waits (its
	// queue stops) when the target is slow instead of dropping, as the
	// per-CPU backlog of a non-NAPI veth does when several labs share the
	// CPUs. Plain UDP sockets get no GRO aggregation: each mirror packet
	// is still received alone.
	if err := setOffloads(l.Target, TargetDev, true); err != nil {
		return l, err
	}
	steps = [][]string{
		// Static neighbours: no ARP on either link, so nothing but the
		// test's own traffic is mirrored.
		{l.Ext, "neigh", "add", ProdAddr.String(), "lladdr", macProd, "dev", ExtDev, "nud", "permanent"},
		{l.Prod, "neigh", "add", ExtAddr.String(), "lladdr", macExt, "dev", ProdDev, "nud", "permanent"},
		{l.Prod, "neigh", "add", TargetAddr.String(), "lladdr", macTarget, "dev", MirrorDev, "nud", "permanent"},
		{l.Target, "neigh", "add", MirrorSrc.String(), "lladdr", macMirror, "dev", TargetDev, "nud", "permanent"},
		// Locally sent TCP is built as GSO super-packets even without
		// offloads (segmented only when the device transmits); tc on
		// prod0's egress would mirror them whole. One segment per packet.
		{l.Ext, "link", "set", "dev", ExtDev, "gso_max_segs", "1"},
		{l.Prod, "link", "set", "dev", ProdDev, "gso_max_segs", "1"},
		{l.Ext, "link", "set", ExtDev, "up"},
		{l.Prod, "link", "set", ProdDev, "up"},
		{l.Prod, "link", "set", MirrorDev, "up"},
		{l.Target, "link", "set", TargetDev, "up"},
	}
	for _, s := range steps {
		if err := l.ip(s[0], s[1:]...); err != nil {
			return l, err
		}
	}
	if err := l.ip(l.Prod, "link", "add", VXLANDev, "type", "vxlan", "id", strconv.FormatUint(uint64(o.VNI), 10),
		"remote", TargetAddr.String(), "local", MirrorSrc.String(), "dstport", strconv.Itoa(o.DstPort),
		"dev", MirrorDev, "nolearning"); err != nil {
		msg := err.Error()
		if strings.Contains(msg, "Unknown device type") || strings.Contains(msg, "not supported") ||
			strings.Contains(msg, "Not supported") {
			return l, fmt.Errorf("%w: %v", ErrNoVXLAN, err)
		}
		return l, err
	}
	if err := l.ip(l.Prod, "link", "set", VXLANDev, "up"); err != nil {
		return l, err
	}
	mirror := []string{"protocol", "all", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", VXLANDev}
	tcSteps := [][]string{
		{"qdisc", "add", "dev", ProdDev, "ingress"},
	}
	l.filters = [][]string{append([]string{"filter", "add", "dev", ProdDev, "parent", "ffff:"}, mirror...)}
	if !o.InboundOnly {
		tcSteps = append(tcSteps,
			// htb without classes: unclassified packets go out directly,
			// unshaped; the filter only copies them.
			[]string{"qdisc", "add", "dev", ProdDev, "root", "handle", "1:", "htb"},
		)
		l.filters = append(l.filters, append([]string{"filter", "add", "dev", ProdDev, "parent", "1:"}, mirror...))
	}
	if !o.DeferMirror {
		tcSteps = append(tcSteps, l.filters...)
		l.filters = nil
	}
	if o.TBF != nil {
		tcSteps = append(tcSteps, []string{"qdisc", "add", "dev", MirrorDev, "root", "tbf",
			"rate", o.TBF.Rate, "burst", o.TBF.Burst, "limit", o.TBF.Limit})
	} else {
		// A deep queue: the mirror path itself never drops (a burst of
		// 100 MB is ~90k packets), so every loss a test sees is the
		// target's.
		tcSteps = append(tcSteps, []string{"qdisc", "add", "dev", MirrorDev, "root", "pfifo", "limit", strconv.Itoa(mirrorQueue)})
	}
	for _, s := range tcSteps {
		if err := l.tc(l.Prod, s...); err != nil {
			return l, err
		}
	}
	return l, nil
}

// StartMirror adds the mirred filters of a lab built with DeferMirror:
// from now on prod0's traffic is mirrored. It does nothing if mirroring
// already runs.
func (l *Lab) StartMirror() error {
	for _, f := range l.filters {
		if err := l.tc(l.Prod, f...); err != nil {
			return err
		}
	}
	l.filters = nil
	return nil
}

// Close deletes the lab's namespaces (and with them every device in them).
// It is safe to call more than once.
func (l *Lab) Close() error {
	var errs []error
	for _, ns := range l.created {
		if err := deleteNS(ns); err != nil {
			if _, serr := os.Stat(netnsDir + "/" + ns); serr == nil {
				errs = append(errs, err)
			}
		}
	}
	l.created = nil
	return errors.Join(errs...)
}

// TargetAddrPort is where the mirror's VXLAN packets are sent:
// TargetAddr:DstPort, inside the Target namespace.
func (l *Lab) TargetAddrPort() netip.AddrPort {
	return netip.AddrPortFrom(TargetAddr, uint16(l.DstPort))
}

func (l *Lab) ip(ns string, args ...string) error {
	_, err := run("ip", append([]string{"-n", ns}, args...)...)
	return err
}

func (l *Lab) tc(ns string, args ...string) error {
	_, err := run("tc", append([]string{"-n", ns}, args...)...)
	return err
}
