package udpin

import (
	"encoding/binary"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oobSize holds an SCM_TIMESTAMPNS (timespec) and an SO_RXQ_OVFL (uint32)
// control message.
var oobSize = unix.CmsgSpace(16) + unix.CmsgSpace(4) + 16

// reader is one socket's recvmmsg state, reused for every call.
type reader struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for IPv4 and IPv6
	oob   []byte
	arena []byte
	batch []Datagram
	max   int
}

func newReader(n, maxDatagram int) *reader {
	r := &reader{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		oob:   make([]byte, n*oobSize),
		// One slot per message, each able to hold the largest datagram.
		// Fresh large allocations are untouched zero pages, so only the
		// bytes datagrams actually fill become resident.
		arena: make([]byte, n*maxDatagram),
		batch: make([]Datagram, 0, n),
		max:   maxDatagram,
	}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.arena[i*maxDatagram]
		r.iovs[i].SetLen(maxDatagram)
		h := &r.hdrs[i].Hdr
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Control = &r.oob[i*oobSize]
	}
	return r
}

// reset prepares the headers the kernel rewrote in the previous call.
func (r *reader) reset() {
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		h.SetControllen(oobSize)
		h.Flags = 0
		r.hdrs[i].Len = 0
	}
}

// recvmmsg reads up to len(r.hdrs) datagrams without blocking.
func (r *reader) recvmmsg(fd uintptr) (int, unix.Errno) {
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
		unix.MSG_DONTWAIT, 0, 0)
	return int(n), e
}

// readLoop reads the socket until it is closed.
func (s *sock) readLoop(batch, maxDatagram int, handle func([]Datagram)) error {
	r := newReader(batch, maxDatagram)
	for {
		var n int
		var errno unix.Errno
		err := s.raw.Read(func(fd uintptr) bool {
			r.reset()
			n, errno = r.recvmmsg(fd)
			return errno != unix.EAGAIN && errno != unix.EINTR
		})
		if err != nil {
			if isClosed(err) {
				return nil
			}
			return err
		}
		if errno != 0 {
			if errno == unix.EBADF {
				return nil
			}
			return errno
		}
		s.deliver(r, n, handle)
	}
}

// deliver turns n received messages into Datagrams and hands them over.
func (s *sock) deliver(r *reader, n int, handle func([]Datagram)) {
	batchNs := time.Now().UnixNano()
	r.batch = r.batch[:0]
	var bytes uint64
	for i := 0; i < n; i++ {
		h := &r.hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 || int(h.Len) > r.max {
			s.trunc.Add(1)
			continue
		}
		d := Datagram{
			Data:      r.arena[i*r.max : i*r.max+int(h.Len)],
			Src:       sockaddr(&r.names[i]),
			LocalPort: s.port,
			TimeNs:    batchNs,
		}
		if ts, ovfl, ok := parseOOB(r.oob[i*oobSize : i*oobSize+int(h.Hdr.Controllen)]); ok {
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
