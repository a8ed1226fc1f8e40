// Package mmsg reads batches of datagrams or frames from a socket with one
// recvmmsg(2) call: the message headers, one I/O vector and one arena slot
// per message, the source addresses and the control messages, set up once
// and reused for every call. The UDP intake (sockaddr_in6) and the
// AF_PACKET capture (sockaddr_ll) share it, with their own address type.
package mmsg

import (
	"errors"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reader is one socket's recvmmsg state. N is the kernel's source address
// type (e.g. unix.RawSockaddrInet6, unix.RawSockaddrLinklayer).
type Reader[N any] struct {
	// Hdrs are the message headers the kernel filled in the last Read:
	// Hdrs[i].Len is message i's length, Hdrs[i].Hdr.Flags its flags.
	Hdrs []unix.Mmsghdr
	// Names are the messages' source addresses.
	Names []N
	iovs  []unix.Iovec
	oob   []byte
	arena []byte
	slot  int
	oobSz int
}

// New returns a Reader of n messages of at most slot bytes each, with
// oobSize bytes of control messages per message. Untouched pages of the
// arena stay unbacked: only the bytes messages fill become resident.
func New[N any](n, slot, oobSize int) *Reader[N] {
	r := &Reader[N]{
		Hdrs:  make([]unix.Mmsghdr, n),
		Names: make([]N, n),
		iovs:  make([]unix.Iovec, n),
		oob:   make([]byte, n*oobSize),
		arena: make([]byte, n*slot),
		slot:  slot,
		oobSz: oobSize,
	}
	for i := range r.Hdrs {
		r.iovs[i].Base = &r.arena[i*slot]
		r.iovs[i].SetLen(slot)
		h := &r.Hdrs[i].Hdr
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.Names[i]))
		h.Control = &r.oob[i*oobSize]
	}
	return r
}

// Slot is the largest message a slot holds.
func (r *Reader[N]) Slot() int { return r.slot }

// Data is message i's bytes: its length, cut at the slot size.
func (r *Reader[N]) Data(i int) []byte {
	return r.arena[i*r.slot : i*r.slot+min(int(r.Hdrs[i].Len), r.slot)]
}

// Control is message i's control messages.
func (r *Reader[N]) Control(i int) []byte {
	return r.oob[i*r.oobSz : i*r.oobSz+int(r.Hdrs[i].Hdr.Controllen)]
}

// reset prepares the headers the kernel rewrote in the previous call.
func (r *Reader[N]) reset() {
	for i := range r.Hdrs {
		h := &r.Hdrs[i].Hdr
		h.Namelen = uint32(unsafe.Sizeof(r.Names[i]))
		h.SetControllen(r.oobSz)
		h.Flags = 0
		r.Hdrs[i].Len = 0
	}
}

// Loop reads raw until its socket is closed: each recvmmsg (non-blocking,
// with flags besides MSG_DONTWAIT, waiting in the runtime's poller when
// nothing is there) that returns messages calls deliver with their
// number. A closed socket ends it with nil; any other error is returned.
func (r *Reader[N]) Loop(raw syscall.RawConn, flags int, deliver func(n int)) error {
	for {
		var n int
		var errno unix.Errno
		err := raw.Read(func(fd uintptr) bool {
			r.reset()
			m, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.Hdrs[0])), uintptr(len(r.Hdrs)),
				uintptr(unix.MSG_DONTWAIT|flags), 0, 0)
			n, errno = int(m), e
			return errno != unix.EAGAIN && errno != unix.EINTR
		})
		if err != nil {
			if IsClosed(err) {
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
		deliver(n)
	}
}

// TryRead reads what is queued on raw with one recvmmsg (flags besides
// MSG_DONTWAIT), without waiting and whatever the socket's read deadline:
// the number of messages read, 0 when the queue is empty. A closed socket
// returns 0 and an error IsClosed accepts.
func (r *Reader[N]) TryRead(raw syscall.RawConn, flags int) (int, error) {
	var n int
	var errno unix.Errno
	err := raw.Control(func(fd uintptr) {
		for {
			r.reset()
			m, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.Hdrs[0])), uintptr(len(r.Hdrs)),
				uintptr(unix.MSG_DONTWAIT|flags), 0, 0)
			if e != unix.EINTR {
				n, errno = int(m), e
				return
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno == unix.EAGAIN:
		return 0, nil
	case errno == unix.EBADF:
		return 0, os.ErrClosed
	case errno != 0:
		return 0, errno
	}
	return n, nil
}

// IsClosed reports whether err says the socket was closed.
func IsClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed)
}
