package afpacket

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tapline/tapline/decap/internal/stopread"
	"github.com/tapline/tapline/decap/mmsg"
)

var oobSize = unix.CmsgSpace(16) + 16

// reader is one socket's recvmmsg state, reused for every call.
type reader struct {
	*mmsg.Reader[unix.RawSockaddrLinklayer]
	pkts []Packet
}

func newReader(n, slot int) *reader {
	return &reader{Reader: mmsg.New[unix.RawSockaddrLinklayer](n, slot, oobSize), pkts: make([]Packet, 0, n)}
}

// truncFlag makes a packet socket report a frame's full length even when
// the slot cut it.
const truncFlag = unix.MSG_TRUNC

// readLoop reads a socket until it is closed, or until the stop began and
// its queue is read (stop.go).
func (c *Capture) readLoop(s *sock, handle func(int, []Packet)) error {
	r := newReader(c.cfg.Batch, c.cfg.Snaplen)
	err := r.Loop(s.raw, truncFlag, func(n int) { s.deliver(r, n, handle) })
	if deadline, ok := c.stop.Get(); ok && stopread.IsWakeUp(err) {
		return s.readQueue(r, deadline, handle)
	}
	return err
}

func (s *sock) deliver(r *reader, n int, handle func(int, []Packet)) {
	r.pkts = r.pkts[:0]
	var bytes uint64
	now := int64(0)
	for i := 0; i < n; i++ {
		wire := int(r.Hdrs[i].Len)
		if wire > r.Slot() {
			s.cut.Add(1)
		}
		p := Packet{Data: r.Data(i), WireLen: wire, Outgoing: r.Names[i].Pkttype == unix.PACKET_OUTGOING}
		p.TimeNs = timestamp(r.Control(i))
		if p.TimeNs == 0 {
			if now == 0 {
				now = nowNs()
			}
			p.TimeNs = now
		}
		bytes += uint64(wire)
		r.pkts = append(r.pkts, p)
	}
	s.packets.Add(uint64(len(r.pkts)))
	s.bytes.Add(bytes)
	if len(r.pkts) > 0 && handle != nil {
		handle(s.idx, r.pkts)
	}
}

// timestamp extracts SCM_TIMESTAMPNS from control messages.
func timestamp(b []byte) int64 {
	hdrLen := unix.CmsgLen(0)
	for len(b) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l-hdrLen >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&b[hdrLen]))
			return ts.Nano()
		}
		adv := unix.CmsgSpace(l - hdrLen)
		if adv > len(b) {
			return 0
		}
		b = b[adv:]
	}
	return 0
}
