package reassemble

import (
	"net"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// relay sits in the lab's target namespace on the mirror's VXLAN port and
// forwards mirror packets to decap's intake, impaired on purpose:
// reordering, duplication, dropping one server payload packet per
// connection, or holding everything back until released.
type relay struct {
	reorderEvery      int // every n-th packet is sent after the next one
	duplicateEvery    int // every n-th packet is sent twice
	dropServerSegment int // the n-th server->client packet with payload of each connection is dropped
	serverPort        atomic.Uint32
	hold              atomic.Bool

	reordered, duplicated, dropped, held int
}

func (r *relay) start(t *testing.T, lab *mirrorlab.Lab, to string) {
	pc, err := mirrorlab.ListenPacket(lab.Target, "udp", lab.TargetAddrPort().String())
	if err != nil {
		t.Fatal(err)
	}
	// A deep receive buffer (forced: root), so the relay itself drops
	// nothing while the mirror bursts.
	if rc, err := pc.(*net.UDPConn).SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 64<<20)
		})
	}
	dst, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		var late []byte
		n := 0
		serverSegs := map[uint16]int{} // by client port
		for {
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			p := append([]byte(nil), buf[:k]...)
			if r.hold.Load() {
				r.held++
				continue
			}
			n++
			if r.dropServerSegment > 0 && len(p) > 8 {
				if fk, err := flow.Parse(flow.LinkEthernet, p[8:]); err == nil && fk.Proto == flow.ProtoTCP && uint32(fk.SrcPort) == r.serverPort.Load() && tcpPayload(p[8:], &fk) > 0 {
					serverSegs[fk.DstPort]++
					if serverSegs[fk.DstPort] == r.dropServerSegment {
						r.dropped++
						continue
					}
				}
			}
			if r.reorderEvery > 0 && n%r.reorderEvery == 0 && late == nil {
				late = p
				r.reordered++
				continue
			}
			pc.WriteTo(p, dst)
			if r.duplicateEvery > 0 && n%r.duplicateEvery == 0 {
				pc.WriteTo(p, dst)
				r.duplicated++
			}
			if late != nil {
				pc.WriteTo(late, dst)
				late = nil
			}
		}
	}()
}

// tcpPayload returns the TCP payload length of an inner frame.
func tcpPayload(b []byte, k *flow.Key) int {
	if k.L4Offset+13 >= len(b) {
		return 0
	}
	ipHdr := k.L4Offset - k.L3Offset
	doff := int(b[k.L4Offset+12]>>4) * 4
	return k.IPTotalLen - ipHdr - doff
}
