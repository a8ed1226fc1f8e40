// Package sockfilter attaches classic BPF programs to sockets
// (SO_ATTACH_FILTER). The AF_PACKET capture and the UDP intake share it.
package sockfilter

import (
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Programs of one instruction: ret 0 refuses every packet, ret 0xffffffff
// accepts every packet whole.
var (
	DropAll   = []bpf.RawInstruction{{Op: 0x06, K: 0}}
	AcceptAll = []bpf.RawInstruction{{Op: 0x06, K: 0xffffffff}}
)

// Attach sets the socket's filter. SO_ATTACH_FILTER replaces a previous
// filter atomically; packets already queued on the socket stay queued:
// the filter only decides what the kernel queues from then on.
func Attach(fd int, prog []bpf.RawInstruction) error {
	if len(prog) == 0 {
		return fmt.Errorf("attach filter: empty program")
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("attach filter: %w", err)
	}
	return nil
}
