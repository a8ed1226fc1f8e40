package udpin

import (
	"encoding/binary"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tapline/tapline/decap/internal/stopread"
	"github.com/tapline/tapline/decap/mmsg"
)

// oobSize holds an SCM_TIMESTAMPNS (timespec) and an SO_RXQ_OVFL (uint32)
// control message.
var oobSize = unix.CmsgSpace(16) + unix.CmsgSpace(4) + 16

// reader is one socket's recvmmsg state, reused for every call; the
// address slots are large enough for IPv4 and IPv6.
type reader struct {
	*mmsg.Reader[unix.RawSockaddrInet6]
	batch []Datagram
}

func newReader(n, maxDatagram int) *reader {
	// One slot per message, each able to hold the largest datagram.
	return &reader{Reader: mmsg.New[unix.RawSockaddrInet6](n, maxDatagram, oobSize), batch: make([]Datagram, 0, n)}
}

// readLoop reads a socket until it is closed, or until the stop began
// and its queue is read (stop.go).
func (in *Intake) readLoop(s *sock, handle func([]Datagram)) error {
	r := newReader(in.cfg.Batch, in.cfg.MaxDatagram)
	err := r.Loop(s.raw, 0, func(n int) { s.deliver(r, n, handle) })
	if deadline, ok := in.stop.Get(); ok && stopread.IsWakeUp(err) {
		return s.readQueue(r, deadline, handle)
	}
	return err
}

// deliver turns n received messages into Datagrams and hands them over.
func (s *sock) deliver(r *reader, n int, handle func([]Datagram)) {
	batchNs := time.Now().UnixNano()
	r.batch = r.batch[:0]
	var bytes uint64
	for i := 0; i < n; i++ {
		h := &r.Hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 || int(h.Len) > r.Slot() {
			s.trunc.Add(1)
			continue
		}
		d := Datagram{
			Data:      r.Data(i),
			Src:       sockaddr(&r.Names[i]),
			LocalPort: s.port,
			TimeNs:    batchNs,
		}
		if ts, ovfl, ok := parseOOB(r.Control(i)); ok {
			if ts != 0 {
				d.TimeNs = ts
			}
			if ovfl != 0 {
				s.noteOverflow(uint64(ovfl))
			}
		}
		bytes += uint64(h.Len)
		r.batch = append(r.batch, d)
	}
	s.packets.Add(uint64(len(r.batch)))
	s.bytes.Add(bytes)
	if len(r.batch) > 0 && handle != nil {
		handle(r.batch)
	}
}

// noteOverflow records the socket's cumulative drop count (SO_RXQ_OVFL).
func (s *sock) noteOverflow(v uint64) {
	for {
		old := s.ovfl.Load()
		if v <= old || s.ovfl.CompareAndSwap(old, v) {
			return
		}
	}
}

// sockaddr decodes the kernel's source address; IPv4-mapped IPv6 becomes
// plain IPv4.
func sockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// parseOOB extracts SCM_TIMESTAMPNS and SO_RXQ_OVFL from control messages
// without allocating.
func parseOOB(b []byte) (tsNs int64, ovfl uint32, ok bool) {
	hdrLen := unix.CmsgLen(0)
	for len(b) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(b) {
			return tsNs, ovfl, ok
		}
		data := b[hdrLen:l]
		if h.Level == unix.SOL_SOCKET {
			switch h.Type {
			case unix.SCM_TIMESTAMPNS:
				if len(data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					tsNs, ok = (*unix.Timespec)(unsafe.Pointer(&data[0])).Nano(), true
				}
			case unix.SO_RXQ_OVFL:
				if len(data) >= 4 {
					ovfl, ok = binary.NativeEndian.Uint32(data[0:4]), true
				}
			}
		}
		next := unix.CmsgSpace(l - hdrLen)
		if next > len(b) {
			break
		}
		b = b[next:]
	}
	return tsNs, ovfl, ok
}
