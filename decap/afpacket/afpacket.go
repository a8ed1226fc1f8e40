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
	"github.com/tapline/tapline/decap/internal/stopread"
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
	// StopRead bounds how long Run keeps reading the sockets' queues once
	// its context ended (new frames are refused meanwhile); what is still
	// queued then is counted in SockStats.StopDropped. A handler call
	// under way when it passes is finished first. 0: DefaultStopRead.
	StopRead time.Duration
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
	// At stop: frames read from the queue during the stop read
	// (StopRead, also in Packets), frames still queued when it ended,
	// discarded (StopDropped), and frames the kernel dropped once the
	// stop began (StopRefused, not in KernelDrops). Frames the refusing
	// filter turns away are not counted by the kernel at all.
	StopRead, StopDropped, StopRefused uint64 `json:",omitempty"`
}

// Capture is an open set of sockets on one interface.
type Capture struct {
	cfg     Config
	socks   []*sock
	closeMu sync.Mutex
	closed  atomic.Bool
	// stop is the stop read's end, once the stop began (stop.go);
	// refuseErrs counts sockets that could not refuse new frames then.
	stop       stopread.Deadline
	refuseErrs atomic.Uint64
}

type sock struct {
	idx     int
	f       *os.File
	raw     syscall.RawConn
	packets atomic.Uint64
	bytes   atomic.Uint64
	cut     atomic.Uint64

	stop stopread.Counts

	// Under mu: the kernel's running totals, and, once the stop began,
	// kdrops at that moment.
	mu            sync.Mutex
	kpkts, kdrops uint64
	stopBase      uint64
	stopping      bool
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
	if cfg.StopRead == 0 {
		cfg.StopRead = DefaultStopRead
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
	case cfg.StopRead < 0:
		return nil, fmt.Errorf("afpacket: StopRead must not be negative, got %v", cfg.StopRead)
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
// the socket's index).
//
// When ctx ends, the sockets refuse new frames, their queues are read
// (handle still gets them) until empty or Config.StopRead has passed,
// what is left is counted (SockStats.StopDropped), and Run closes the
// sockets: when Run returns, handle has seen every frame it will see.
// Close instead closes them at once: what is queued is lost. Run returns
// nil after a clean stop, or the first read error.
func (c *Capture) Run(ctx context.Context, handle func(sock int, pkts []Packet)) error {
	stop := context.AfterFunc(ctx, c.beginStop)
	defer stop()
	errs := make(chan error, len(c.socks))
	for _, s := range c.socks {
		go func() {
			err := c.readLoop(s, handle)
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
	c.Close()
	return first
}

// Close closes every socket (after a last reading of the kernel's
// counters); Run returns. It is safe to call more than once and
// concurrently with Run.
func (c *Capture) Close() {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed.Load() {
		return
	}
	for _, s := range c.socks {
		s.mu.Lock()
		s.readKernel()
		s.mu.Unlock()
	}
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
		s.readKernel()
		st := SockStats{Socket: s.idx, Packets: s.packets.Load(), Bytes: s.bytes.Load(), Cut: s.cut.Load(),
			KernelPackets: s.kpkts, KernelDrops: s.kdrops,
			StopRead: s.stop.Read.Load(), StopDropped: s.stop.Dropped.Load()}
		if s.stopping && s.kdrops > s.stopBase {
			st.KernelDrops, st.StopRefused = s.stopBase, s.kdrops-s.stopBase
		}
		s.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// readKernel adds the kernel's counters since the last reading to the
// running totals; a closed socket adds nothing. Callers hold s.mu.
func (s *sock) readKernel() {
	_ = s.raw.Control(func(fd uintptr) {
		if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			// tp_packets counts every frame queued or dropped.
			s.kpkts += uint64(st.Packets)
			s.kdrops += uint64(st.Drops)
		}
	})
}

// nowNs is the fallback timestamp when the kernel gave none.
func nowNs() int64 { return time.Now().UnixNano() }
