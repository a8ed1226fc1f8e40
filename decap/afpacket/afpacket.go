// Package afpacket captures Ethernet frames of one network interface with
// Linux AF_PACKET sockets, in pure Go (golang.org/x/sys/unix, no libpcap,
// no cgo): several sockets joined in a fanout group (the kernel spreads
// flows over them by a symmetric flow hash), a classic BPF filter in the
// kernel (a drop-all program until the socket is bound and in its fanout
// group, so nothing unfiltered or duplicated is ever queued), batched reads with recvmmsg, kernel timestamps
// (SO_TIMESTAMPNS), the direction of each frame (sent by the host or
// received), and the kernel's own per-socket capture counters
// (PACKET_STATISTICS: frames queued and frames dropped because the
// socket's receive queue was full).
//
// The receive queue of each socket is its ring: Config.RcvBuf bytes
// (SO_RCVBUFFORCE, as root), which absorbs bursts while the reader is busy.
package afpacket

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/tapline/tapline/decap/internal/sockfilter"
)

// Defaults of Config.
const (
	DefaultSockets = 2
	DefaultRcvBuf  = 64 << 20
	DefaultBatch   = 16
	DefaultSnaplen = 262144
)

// Config says what to capture and how.
type Config struct {
	// Iface is the interface name (required).
	Iface string
	// Sockets in the fanout group (0: DefaultSockets; 1: no fanout).
	Sockets int
	// RcvBuf is each socket's receive queue in bytes (0: DefaultRcvBuf).
	RcvBuf int
	// Batch is the frames one recvmmsg reads at most (0: DefaultBatch).
	Batch int
	// Snaplen is the largest frame kept whole; longer ones are cut and
	// keep their length on the wire (0: DefaultSnaplen).
	Snaplen int
	// Filter is the program attached to every socket (nil: every frame).
	Filter []bpf.RawInstruction
}

// Packet is one captured frame. Data aliases the reader's buffer: it is
// valid only during the handler call.
type Packet struct {
	Data     []byte
	WireLen  int   // length on the wire (> len(Data) when cut at Snaplen)
	TimeNs   int64 // kernel receive time
	Outgoing bool  // sent by this host (PACKET_OUTGOING), else received
}

// SockStats are one socket's counters since it opened.
type SockStats struct {
	// Socket is the index of the socket in the fanout group.
	Socket int
	// Packets and Bytes read by the reader.
	Packets, Bytes uint64
	// KernelPackets the kernel queued and KernelDrops it dropped because
	// the receive queue was full (PACKET_STATISTICS, accumulated).
	KernelPackets, KernelDrops uint64
	// Cut counts frames longer than Snaplen.
	Cut uint64
}

// Capture is an open set of sockets on one interface.
type Capture struct {
	cfg    Config
	socks  []*sock
	closed atomic.Bool
}

type sock struct {
	idx     int
	f       *os.File
	raw     syscall.RawConn
	packets atomic.Uint64
	bytes   atomic.Uint64
	cut     atomic.Uint64

	mu            sync.Mutex
	kpkts, kdrops uint64
}

// Open creates and binds the sockets. On error nothing stays open.
func Open(cfg Config) (*Capture, error) {
	if cfg.Sockets == 0 {
		cfg.Sockets = DefaultSockets
	}
	if cfg.RcvBuf == 0 {
		cfg.RcvBuf = DefaultRcvBuf
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Snaplen == 0 {
		cfg.Snaplen = DefaultSnaplen
	}
	switch {
	case cfg.Sockets < 0 || cfg.Sockets > 64:
		return nil, fmt.Errorf("afpacket: Sockets must be 0..64, got %d", cfg.Sockets)
	case cfg.RcvBuf < 0:
		return nil, fmt.Errorf("afpacket: RcvBuf must not be negative")
	case cfg.Batch < 0 || cfg.Batch > 1024:
		return nil, fmt.Errorf("afpacket: Batch must be 0..1024, got %d", cfg.Batch)
	case cfg.Snaplen < 64 || cfg.Snaplen > 1<<20:
		return nil, fmt.Errorf("afpacket: Snaplen must be 64..1048576, got %d", cfg.Snaplen)
	}
	ifi, err := net.InterfaceByName(cfg.Iface)
	if err != nil {
		return nil, fmt.Errorf("afpacket: interface %q: %w", cfg.Iface, err)
	}
	c := &Capture{cfg: cfg}
	// One fanout group id per capture: the process id keeps two captures
	// of different processes apart; the kernel keeps groups per netns.
	group := uint16(os.Getpid()) ^ uint16(ifi.Index<<8)
	for i := 0; i < cfg.Sockets; i++ {
		s, err := openSock(i, ifi.Index, cfg, group)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.socks = append(c.socks, s)
	}
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// attach sets the socket's filter (SO_ATTACH_FILTER replaces the previous
// one atomically).
func attach(fd int, prog []bpf.RawInstruction) error {
	if err := sockfilter.Attach(fd, prog); err != nil {
		return fmt.Errorf("afpacket: %w", err)
	}
	return nil
}

func openSock(idx, ifindex int, cfg Config, group uint16) (*sock, error) {
	// Protocol 0: the socket receives nothing until bound below, after the
	// filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("afpacket: socket: %w (needs CAP_NET_RAW)", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	// Drop everything until the socket is in its fanout group: between
	// bind and joining, a socket would see every frame, duplicating what
	// the group's other sockets see.
	if err := attach(fd, sockfilter.DropAll); err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.RcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.RcvBuf); err != nil {
			return nil, fmt.Errorf("afpacket: SO_RCVBUF: %w", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return nil, fmt.Errorf("afpacket: SO_TIMESTAMPNS: %w", err)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("afpacket: bind: %w", err)
	}
	if cfg.Sockets > 1 {
		arg := int(group) | (unix.PACKET_FANOUT_HASH|unix.PACKET_FANOUT_FLAG_DEFRAG)<<16
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, arg); err != nil {
			return nil, fmt.Errorf("afpacket: PACKET_FANOUT: %w", err)
		}
	}
	prog := cfg.Filter
	if len(prog) == 0 {
		prog = sockfilter.AcceptAll
	}
	if err := attach(fd, prog); err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("afpacket:%d", idx))
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		ok = true // f owns fd now
		return nil, err
	}
	ok = true
	return &sock{idx: idx, f: f, raw: raw}, nil
}

// Run reads every socket until ctx ends or Close is called, handing each
// batch of frames to handle (called from one goroutine per socket, with
// the socket's index). It returns nil after a clean stop.
func (c *Capture) Run(ctx context.Context, handle func(sock int, pkts []Packet)) error {
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	errs := make(chan error, len(c.socks))
	for _, s := range c.socks {
		go func() {
			err := s.readLoop(c.cfg, handle)
			if c.closed.Load() {
				err = nil // the read failed because Close closed the socket
			}
			errs <- err
		}()
	}
	var first error
	for range c.socks {
		if err := <-errs; err != nil && first == nil {
			first = err
			c.Close()
		}
	}
	return first
}

// Close closes every socket; Run returns.
func (c *Capture) Close() {
	c.closed.Store(true)
	for _, s := range c.socks {
		_ = s.f.Close()
	}
}

// Stats returns every socket's counters, reading the kernel's
// PACKET_STATISTICS (which the kernel resets on each read) into running
// totals.
func (c *Capture) Stats() []SockStats {
	out := make([]SockStats, 0, len(c.socks))
	for _, s := range c.socks {
		s.mu.Lock()
		_ = s.raw.Control(func(fd uintptr) {
			if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
				// tp_packets counts every frame queued or dropped.
				s.kpkts += uint64(st.Packets)
				s.kdrops += uint64(st.Drops)
			}
		})
		st := SockStats{Socket: s.idx, Packets: s.packets.Load(), Bytes: s.bytes.Load(), Cut: s.cut.Load(),
			KernelPackets: s.kpkts, KernelDrops: s.kdrops}
		s.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// nowNs is the fallback timestamp when the kernel gave none.
func nowNs() int64 { return time.Now().UnixNano() }
