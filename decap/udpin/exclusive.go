package udpin

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Foreign is a UDP socket of another process bound to a port the intake
// wants.
type Foreign struct {
	Local netip.AddrPort // its local address
	Inode uint64
	PID   int // owning process, 0 when it cannot be found (another user, another PID namespace)
}

// ErrPortShared is returned (wrapped) when another process has a socket on
// a port the intake listens on.
type ErrPortShared struct {
	Port    uint16
	Foreign Foreign
}

// Error names the port, the other socket and what to do.
func (e *ErrPortShared) Error() string {
	who := "another process"
	if e.Foreign.PID > 0 {
		who = "process " + strconv.Itoa(e.Foreign.PID)
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", e.Foreign.PID)); err == nil {
			who += " (" + strings.TrimSpace(string(b)) + ")"
		}
	}
	return fmt.Sprintf("UDP port %d is already bound by %s on %s: two receivers on one port split the mirror traffic between them (SO_REUSEPORT); stop the other one (a restart must wait for the old process to exit) or give this one other ports (--vxlan-port/--geneve-port, --listen-addr)",
		e.Port, who, e.Foreign.Local)
}

// CheckPort returns an *ErrPortShared when a UDP socket of another process
// in the calling thread's network namespace is bound to port on an address
// that overlaps host (an invalid host means every address). Sockets of
// this process are not counted, so one process may open several intakes.
func CheckPort(host netip.Addr, port uint16) error {
	if port == 0 {
		return nil
	}
	dir := "/proc/thread-self/net/"
	if _, err := os.Stat(dir); err != nil {
		dir = "/proc/self/net/"
	}
	var mine map[uint64]bool
	for _, name := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(dir + name)
		if err != nil {
			continue // no IPv6, or no /proc: nothing to compare with
		}
		for _, s := range parseBound(b) {
			if s.Local.Port() != port || !overlaps(host, s.Local.Addr()) {
				continue
			}
			if mine == nil {
				mine = ownSockets()
			}
			if mine[s.Inode] {
				continue
			}
			s.PID = socketOwner(s.Inode)
			return &ErrPortShared{Port: port, Foreign: s}
		}
	}
	return nil
}

// overlaps reports whether sockets bound to a and b receive some of the
// same datagrams (one is a wildcard, or they are equal).
func overlaps(a, b netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || b.IsUnspecified() {
		return true
	}
	return a.Unmap() == b.Unmap()
}

// parseBound lists the sockets of /proc/net/udp or udp6 with their local
// address and inode.
func parseBound(b []byte) []Foreign {
	var out []Foreign
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		if first || len(f) < 10 {
			continue
		}
		ap, ok := parseProcAddr(f[1])
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if !ok || err != nil {
			continue
		}
		out = append(out, Foreign{Local: ap, Inode: inode})
	}
	return out
}

// parseProcAddr parses "0100007F:12B5": the address as the kernel's
// 32-bit words in host byte order (little-endian on every platform Tapline
// runs on), the port in hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	as, ps, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(ps, 16, 16)
	raw, herr := hex.DecodeString(as)
	if err != nil || herr != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}

// ownSockets returns the inodes of this process's sockets.
func ownSockets() map[uint64]bool {
	return socketsOf("/proc/self/fd")
}

func socketsOf(fdDir string) map[uint64]bool {
	out := map[uint64]bool{}
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		l, err := os.Readlink(fdDir + "/" + e.Name())
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[n] = true
			}
		}
	}
	return out
}

// socketOwner finds the process holding the socket with this inode (0:
// not found).
func socketOwner(inode uint64) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir("/proc/" + e.Name() + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/" + e.Name() + "/fd/" + fd.Name()); err == nil && l == want {
				return pid
			}
		}
	}
	return 0
}
