package e2e

import (
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// relayPort is decap's VXLAN port behind a dropRelay.
const relayPort = 4790

// dropRelay listens on the mirror's VXLAN address in the target namespace
// and forwards every datagram to decap on relayPort, except the nth that
// carries TCP payload (longer than a bare ACK's), which it drops: one
// mirror packet lost at a known place.
type dropRelay struct {
	dropped   atomic.Int64
	forwarded atomic.Int64
}

// startDropRelay starts the relay; it stops when the test ends.
func startDropRelay(t testing.TB, lab *mirrorlab.Lab, nth, port int) *dropRelay {
	t.Helper()
	pc, err := mirrorlab.ListenPacket(lab.Target, "udp", lab.TargetAddrPort().String())
	if err != nil {
		t.Fatal(err)
	}
	// A deep receive buffer (forced: root), so the relay itself drops
	// nothing while the mirror bursts.
	if rc, err := pc.(*net.UDPConn).SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 128<<20)
		})
	}
	dst, err := net.ResolveUDPAddr("udp", net.JoinHostPort(mirrorlab.TargetAddr.String(), strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	r := &dropRelay{}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		n := 0
		for {
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			// VXLAN 8 + Ethernet 14 + IPv4 20 + TCP 32 (timestamps) = 74
			// bytes without payload.
			if k > 74 {
				n++
				if n == nth {
					r.dropped.Add(1)
					continue
				}
			}
			if _, err := pc.WriteTo(buf[:k], dst); err == nil {
				r.forwarded.Add(1)
			}
		}
	}()
	return r
}
