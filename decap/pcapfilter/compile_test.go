package pcapfilter

import (
	"encoding/binary"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// frame builds an untagged Ethernet frame: IPv4 or IPv6 (by src's family)
// with IP protocol proto and, for TCP/UDP/SCTP, ports; frag sets an IPv4
// fragment offset.
func frame(src, dst string, proto uint8, sport, dport uint16, frag uint16) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	b := make([]byte, 14, 128)
	b[12], b[13] = 0x08, 0x00
	if s.Is4() {
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[9] = proto
		copy(ip[12:], s.AsSlice())
		copy(ip[16:], d.AsSlice())
		b = append(b, ip...)
	} else {
		b[12], b[13] = 0x86, 0xdd
		ip := make([]byte, 40)
		ip[0] = 0x60
		ip[6] = proto
		copy(ip[8:], s.AsSlice())
		copy(ip[24:], d.AsSlice())
		b = append(b, ip...)
	}
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	b = append(b, l4...)
	binary.BigEndian.PutUint16(b[14+2:], uint16(len(b)-14))
	return b
}

func arpFrame() []byte {
	b := make([]byte, 42)
	b[12], b[13] = 0x08, 0x06
	return b
}

// corpus is a spread of frames over families, protocols, addresses and
// ports.
func corpus() [][]byte {
	var out [][]byte
	v4 := []string{"10.0.0.1", "10.0.0.2", "10.1.2.3", "192.168.1.1", "172.16.5.4"}
	v6 := []string{"2001:db8::1", "2001:db8::2", "fe80::1", "2001:db8:1::5"}
	ports := []uint16{22, 53, 80, 443, 1024, 8080, 9000}
	protos := []uint8{protoTCP, protoUDP, protoSCTP, protoICMP, protoICMP6, 47}
	for _, fam := range [][]string{v4, v6} {
		for i, s := range fam {
			d := fam[(i+1)%len(fam)]
			for j, p := range protos {
				sp, dp := ports[(i+j)%len(ports)], ports[(i+2*j+1)%len(ports)]
				out = append(out, frame(s, d, p, sp, dp, 0), frame(d, s, p, dp, sp, 0))
				if fam[0] == v4[0] {
					out = append(out, frame(s, d, p, sp, dp, 0x0020)) // a non-first fragment
				}
			}
		}
	}
	arp := arpFrame()
	copy(arp[28:], []byte{10, 0, 0, 1})
	copy(arp[38:], []byte{10, 1, 2, 3})
	return append(out, arpFrame(), arp, make([]byte, 10))
}

func run(t *testing.T, prog []bpf.Instruction, pkt []byte) bool {
	t.Helper()
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	n, err := vm.Run(pkt)
	if err != nil {
		t.Fatalf("vm.Run: %v", err)
	}
	return n > 0
}

var exprs = []string{
	"", "ip", "ip6", "arp", "tcp", "udp", "sctp", "icmp", "icmp6",
	"host 10.0.0.1", "src host 10.0.0.1", "dst host 10.0.0.2", "ip host 10.1.2.3",
	"host 2001:db8::1", "ip6 src host fe80::1", "dst host 2001:db8::2",
	"net 10.0.0.0/8", "net 10.0.0.0/24", "src net 192.168.0.0/16", "dst net 172.16.0.0/12",
	"net 2001:db8::/32", "net 2001:db8:1::/48", "net fe80::/10", "net 10.0.0.0 mask 255.0.0.0",
	"port 80", "src port 443", "dst port 22", "tcp port 80", "udp port 53", "tcp dst port 8080",
	"udp src port 1024", "ip6 and tcp port 443", "portrange 1000-9000", "tcp portrange 20-80",
	"port 80 or 443", "tcp and (port 80 or port 443)", "not tcp", "!udp",
	"host 10.0.0.1 and not port 22", "(host 10.0.0.1 or host 10.0.0.2) and tcp",
	"not (icmp or arp)", "ip and not net 10.0.0.0/24 || ip6 && port 9000",
	"tcp or udp and not port 53", "src net 10.0.0.0/8 and dst port 80 and tcp",
	"net 0.0.0.0/0", "net ::/0 and udp", "port 0 or port 65535", "ip net 0.0.0.0/0", "ip host 10.0.0.1 or arp",
	"tcp and port 80 or udp and port 53", "not tcp and not udp or port 22",
}

// TestAgainstTcpdump compiles every expression with tcpdump (libpcap) too
// and runs both programs on the corpus: they must agree on every frame.
func TestAgainstTcpdump(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		mirrorlab.Unavailable(t, "tcpdump not installed: TestSemantics still checks the compiler")
	}
	pkts := corpus()
	for _, e := range exprs {
		ours, err := Compile(e, 0)
		if err != nil {
			t.Errorf("%q: %v", e, err)
			continue
		}
		theirs, err := tcpdumpProg(e)
		if err != nil {
			t.Fatalf("%q: tcpdump: %v", e, err)
		}
		for i, p := range pkts {
			if a, b := run(t, ours, p), run(t, theirs, p); a != b {
				t.Errorf("%q: frame %d (% x): ours %v, tcpdump %v", e, i, p[:min(len(p), 58)], a, b)
			}
		}
	}
}

func tcpdumpProg(expr string) ([]bpf.Instruction, error) {
	out, err := exec.Command("tcpdump", "-y", "EN10MB", "-ddd", expr).Output()
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var raw []bpf.RawInstruction
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		var v [4]uint64
		for i := range f {
			v[i], _ = strconv.ParseUint(f[i], 10, 32)
		}
		raw = append(raw, bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])})
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		return nil, nil
	}
	return prog, nil
}

// TestSemantics checks chosen frames against hand-decided answers, without
// tcpdump.
func TestSemantics(t *testing.T) {
	tcp80 := frame("10.0.0.1", "10.0.0.2", protoTCP, 40000, 80, 0)
	udp53 := frame("2001:db8::1", "2001:db8::2", protoUDP, 53, 5353, 0)
	frag := frame("10.0.0.1", "10.0.0.2", protoTCP, 40000, 80, 0x0010)
	cases := []struct {
		expr string
		pkt  []byte
		want bool
	}{
		{"tcp port 80", tcp80, true},
		{"tcp port 80", frag, false},
		{"udp port 80", tcp80, false},
		{"src port 80", tcp80, false},
		{"dst port 80", tcp80, true},
		{"port 53 and ip6", udp53, true},
		{"ip6 net 2001:db8::/32 and not tcp", udp53, true},
		{"host 10.0.0.2 and (port 22 or 80)", tcp80, true},
		{"not host 10.0.0.2", tcp80, false},
		{"net 10.0.0.0 mask 255.255.255.0", tcp80, true},
		{"portrange 79-81", tcp80, true},
		{"portrange 81-90", tcp80, false},
		{"ip", udp53, false},
		{"arp", arpFrame(), true},
	}
	for _, c := range cases {
		prog, err := Compile(c.expr, 0)
		if err != nil {
			t.Fatalf("%q: %v", c.expr, err)
		}
		if got := run(t, prog, c.pkt); got != c.want {
			t.Errorf("%q = %v, want %v", c.expr, got, c.want)
		}
	}
}

func TestErrors(t *testing.T) {
	for _, e := range []string{
		"host", "port", "port http", "host example.com", "tcp host 10.0.0.1", "ip host ::1",
		"net 10.0.0.1/8", "net 10.0.0.0 mask 255.0.255.0", "port 70000", "(tcp", "tcp)",
		"tcp and", "and tcp", "frobnicate", "src tcp", "a & b", "portrange 10", "host 10.0.0.1%eth0",
		strings.Repeat("(", 100) + "tcp" + strings.Repeat(")", 100), "tcp $",
	} {
		if _, err := Compile(e, 0); err == nil {
			t.Errorf("%q: no error", e)
		}
	}
}

func TestTooLarge(t *testing.T) {
	e := "port 1"
	for i := 2; i < 200; i++ {
		e += " or port " + strconv.Itoa(i)
	}
	if _, err := Compile(e, 0); err == nil {
		t.Fatal("no error for a huge filter")
	}
}
