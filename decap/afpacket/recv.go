package afpacket

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

var oobSize = unix.CmsgSpace(16) + 16

// reader is one socket's recvmmsg state, reused for every call.
type reader struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrLinklayer
	oob   []byte
	arena []byte
	pkts  []Packet
	slot  int
}

func newReader(n, slot int) *reader {
	r := &reader{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrLinklayer, n),
		oob:   make([]byte, n*oobSize),
		// Untouched pages of a large allocation stay unbacked: only the
		// bytes frames fill become resident.
		arena: make([]byte, n*slot),
		pkts:  make([]Packet, 0, n),
		slot:  slot,
	}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.arena[i*slot]
		r.iovs[i].SetLen(slot)
		h := &r.hdrs[i].Hdr
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Control = &r.oob[i*oobSize]
	}
	return r
}

func (r *reader) reset() {
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		h.SetControllen(oobSize)
		h.Flags = 0
		r.hdrs[i].Len = 0
	}
}

func (s *sock) readLoop(cfg Config, handle func(int, []Packet)) error {
	r := newReader(cfg.Batch, cfg.Snaplen)
	for {
		var n int
		var errno unix.Errno
		err := s.raw.Read(func(fd uintptr) bool {
			r.reset()
			// MSG_TRUNC: a packet socket then reports a frame's full
			// length even when the slot cut it.
			m, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
				unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
			n, errno = int(m), e
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

func (s *sock) deliver(r *reader, n int, handle func(int, []Packet)) {
	r.pkts = r.pkts[:0]
	var bytes uint64
	now := int64(0)
	for i := 0; i < n; i++ {
		h := &r.hdrs[i]
		wire := int(h.Len)
		got := min(wire, r.slot)
		if wire > r.slot {
			s.cut.Add(1)
		}
		p := Packet{Data: r.arena[i*r.slot : i*r.slot+got], WireLen: wire, Outgoing: r.names[i].Pkttype == unix.PACKET_OUTGOING}
		p.TimeNs = timestamp(r.oob[i*oobSize : i*oobSize+int(h.Hdr.Controllen)])
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
