package mirrorlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NamePrefix starts the name of every namespace a lab creates:
// "tapline-<pid>-<random>".
const NamePrefix = "tapline-"

const netnsDir = "/run/netns"

// newName returns a unique namespace name carrying the creating process's
// pid so leftovers of dead processes can be recognised.
func newName(role string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return NamePrefix + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:]) + "-" + role
}

// RemoveLeftovers deletes lab namespaces whose creating process no longer
// exists (a test binary killed before its cleanup ran). Namespaces of
// running processes, including other tests running now, are left alone.
func RemoveLeftovers() {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, NamePrefix) {
			continue
		}
		rest := strings.TrimPrefix(name, NamePrefix)
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		if pid == os.Getpid() || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		_ = deleteNS(name)
	}
}

func addNS(name string) error {
	_, err := run("ip", "netns", "add", name)
	return err
}

func deleteNS(name string) error {
	_, err := run("ip", "netns", "delete", name)
	return err
}

// run executes a command in the current (root) namespace and returns its
// standard output; the error carries standard error.
func run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Exec runs a command inside namespace ns (ip netns exec) and returns its
// standard output. The error includes the command's standard error.
func Exec(ns string, cmd ...string) ([]byte, error) {
	if len(cmd) == 0 {
		return nil, fmt.Errorf("mirrorlab: Exec without a command")
	}
	return run("ip", append([]string{"netns", "exec", ns}, cmd...)...)
}

// Do runs fn on an OS thread switched into network namespace ns (a name
// under /run/netns, as created by `ip netns add`). Sockets created inside fn
// belong to ns for their whole life and may be used from any goroutine
// afterwards. fn must not start goroutines that create sockets: those run
// on other threads, in the process's own namespace.
func Do(ns string, fn func() error) error {
	target, err := unix.Open(netnsDir+"/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mirrorlab: open namespace %s: %w", ns, err)
	}
	defer unix.Close(target)

	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("mirrorlab: open own namespace: %w", err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("mirrorlab: enter namespace %s: %w", ns, err)
	}
	defer func() {
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// The thread is stuck in ns: keep it locked so the runtime
			// discards it when this goroutine exits instead of reusing it.
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// Listen opens a stream listener (net.Listen) inside namespace ns.
func Listen(ns, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(ns, func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket (net.ListenPacket) inside namespace ns.
func ListenPacket(ns, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := Do(ns, func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Dial connects from inside namespace ns. addr must be a literal IP address
// and port (no name resolution happens inside the namespace).
func Dial(ns, network, addr string) (net.Conn, error) {
	return DialContext(ns)(context.Background(), network, addr)
}

// DialContext returns a dial function whose connections are made from
// inside namespace ns, for http.Transport.DialContext, websocket dialers and
// the like. Addresses must be literal IPs.
func DialContext(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Do(ns, func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// writeSysctl sets a per-namespace sysctl (a path under /proc/sys/net)
// inside ns.
func writeSysctl(ns, path, value string) error {
	return Do(ns, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(path, ".", "/"), []byte(value), 0)
	})
}

// readProcNet reads /proc/net/<file> as seen from inside ns.
func readProcNet(ns, file string) ([]byte, error) {
	var b []byte
	err := Do(ns, func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/" + file)
		return err
	})
	return b, err
}

// ethtool legacy commands that switch one offload (struct ethtool_value).
const (
	ethtoolSTSO = 0x1f
	ethtoolSGSO = 0x24
	ethtoolSGRO = 0x2c
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data *ethtoolValue
	_    [16]byte
}

// setOffloads switches off TSO and GSO on a device of ns so every packet
// crosses tc as one wire-sized frame (what a real NIC mirror sees), and
// sets GRO. On a veth, GRO on the receiving end puts it in NAPI mode.
func setOffloads(ns, dev string, gro bool) error {
	return Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, cmd := range []uint32{ethtoolSTSO, ethtoolSGSO, ethtoolSGRO} {
			v := ethtoolValue{cmd: cmd}
			if cmd == ethtoolSGRO && gro {
				v.data = 1
			}
			var ifr ifreqData
			copy(ifr.name[:], dev)
			ifr.data = &v
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
				return fmt.Errorf("mirrorlab: ethtool %#x on %s: %w", cmd, dev, syscall.Errno(e))
			}
			runtime.KeepAlive(&v)
		}
		return nil
	})
}
