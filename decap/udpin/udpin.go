// Package udpin is decap's lossless UDP intake: several SO_REUSEPORT
// sockets per address, each with a large receive buffer and its own reader
// goroutine reading batches of whole datagrams with recvmmsg, with kernel
// receive timestamps and the kernel's receive drops counted.
//
// A naive reader (one socket, default buffer, one read per datagram) loses
// most of a mirror burst to receive-buffer overflow; see Naive, kept as the
// baseline for tests and benchmarks.
//
// Open creates the sockets when it is called, so a caller can open them
// inside a network namespace (mirrorlab.Do) and run the intake from
// anywhere.
package udpin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapline/tapline/decap/internal/stopread"
)

// Defaults for zero Config fields.
const (
	DefaultRcvBuf      = 64 << 20
	DefaultBatch       = 64
	DefaultMaxDatagram = 65535
	maxBatch           = 1024 // UIO_MAXIOV
)

// Config says what to listen on and how.
type Config struct {
	// Addrs are UDP addresses "host:port" to listen on. An empty host
	// listens on every IPv4 and IPv6 address (one dual-stack socket
	// group); port 0 picks a free port (the same one for every socket of
	// that address, see Intake.Addrs).
	Addrs []string
	// Sockets per address, each with its own reader goroutine; the kernel
	// spreads datagrams over them by flow (SO_REUSEPORT). 0: GOMAXPROCS.
	Sockets int
	// RcvBuf is the receive buffer asked for each socket, in bytes.
	// 0: DefaultRcvBuf.
	RcvBuf int
	// Batch is the number of datagrams read per recvmmsg call.
	// 0: DefaultBatch.
	Batch int
	// MaxDatagram is the largest datagram read whole (a larger one is
	// dropped and counted as truncated). 0: DefaultMaxDatagram (65535,
	// every UDP datagram).
	MaxDatagram int
	// StopRead bounds how long Run keeps reading the sockets' queues once
	// its context ended (new datagrams are refused meanwhile); what is
	// still queued then is counted in Stats.StopDropped. A handler call
	// under way when it passes is finished first. 0: DefaultStopRead.
	StopRead time.Duration
}

// Datagram is one received UDP datagram.
type Datagram struct {
	// Data is the UDP payload. It aliases the reader's buffer and is only
	// valid until the handler returns.
	Data []byte
	// Src is the sender (IPv4 senders are plain IPv4, also on dual-stack
	// sockets).
	Src netip.AddrPort
	// LocalPort is the port it was received on (4789 VXLAN, 6081 GENEVE).
	LocalPort uint16
	// TimeNs is the kernel's receive timestamp in ns since the Unix epoch.
	TimeNs int64
}

// Intake is a set of open sockets. Run reads them; Close closes them.
type Intake struct {
	cfg     Config
	log     *slog.Logger
	socks   []*sock
	procs   *procFiles
	closeMu sync.Mutex
	closed  bool
	running atomic.Bool
	stop    stopread.Deadline // the stop read's end, once the stop began (stop.go)
}

// sock is one socket and its counters.
type sock struct {
	conn    *net.UDPConn
	raw     syscall.RawConn
	listen  string // the Config address it serves, the metric label
	port    uint16
	inode   uint64
	rcvbuf  int // effective receive buffer (as getsockopt reports it)
	packets atomic.Uint64
	bytes   atomic.Uint64
	trunc   atomic.Uint64
	ovfl    atomic.Uint64 // latest SO_RXQ_OVFL value: the socket's drops so far
	// At stop (stop.go): datagrams read from the queue, datagrams still
	// queued when the stop read ended (discarded), and, under procs.mu,
	// the kernel's drop count when new datagrams began to be refused.
	stop     stopread.Counts
	stopBase uint64
	stopping bool
	_        [64]byte
}

// Open creates the sockets. On error, nothing stays open.
func Open(cfg Config, log *slog.Logger) (*Intake, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("udpin: no address to listen on")
	}
	if cfg.Sockets == 0 {
		cfg.Sockets = runtime.GOMAXPROCS(0)
	}
	if cfg.RcvBuf == 0 {
		cfg.RcvBuf = DefaultRcvBuf
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.MaxDatagram == 0 {
		cfg.MaxDatagram = DefaultMaxDatagram
	}
	if cfg.StopRead == 0 {
		cfg.StopRead = DefaultStopRead
	}
	switch {
	case cfg.Sockets < 0 || cfg.Sockets > 1024:
		return nil, fmt.Errorf("udpin: Sockets must be 0..1024, got %d", cfg.Sockets)
	case cfg.RcvBuf < 0:
		return nil, fmt.Errorf("udpin: RcvBuf must not be negative, got %d", cfg.RcvBuf)
	case cfg.Batch < 0 || cfg.Batch > maxBatch:
		return nil, fmt.Errorf("udpin: Batch must be 0..%d, got %d", maxBatch, cfg.Batch)
	case cfg.MaxDatagram < 0 || cfg.MaxDatagram > 65535:
		return nil, fmt.Errorf("udpin: MaxDatagram must be 0..65535, got %d", cfg.MaxDatagram)
	case cfg.StopRead < 0:
		return nil, fmt.Errorf("udpin: StopRead must not be negative, got %v", cfg.StopRead)
	}
	in := &Intake{cfg: cfg, log: log}
	in.procs = openProcFiles() // before any socket: same thread, same namespace
	for _, addr := range cfg.Addrs {
		if err := in.openAddr(addr); err != nil {
			in.Close()
			return nil, err
		}
	}
	// SO_REUSEPORT lets another process join our ports (or us join its):
	// the kernel would split the datagrams between us. Checked after
	// binding, so two processes starting together both see each other.
	for _, s := range in.socks {
		la := s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := CheckPort(la.Addr(), la.Port()); err != nil {
			in.Close()
			return nil, err
		}
	}
	return in, nil
}

// openAddr opens cfg.Sockets sockets on one address.
func (in *Intake) openAddr(addr string) error {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("udpin: address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fmt.Errorf("udpin: address %q: bad port", addr)
	}
	network := "udp"
	if host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("udpin: address %q: host must be an IP address", addr)
		}
		if ip.Unmap().Is4() {
			network = "udp4"
		} else {
			network = "udp6"
		}
	}
	lc := net.ListenConfig{Control: in.control}
	first := len(in.socks)
	for i := 0; i < in.cfg.Sockets; i++ {
		bind := net.JoinHostPort(host, strconv.Itoa(int(port)))
		pc, err := lc.ListenPacket(context.Background(), network, bind)
		if err != nil {
			return fmt.Errorf("udpin: listen %s: %w", bind, err)
		}
		conn := pc.(*net.UDPConn)
		s := &sock{conn: conn, listen: addr}
		s.port = conn.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		port = uint64(s.port) // port 0: every socket shares the first one's port
		if s.raw, err = conn.SyscallConn(); err != nil {
			conn.Close()
			return err
		}
		_ = s.raw.Control(func(fd uintptr) {
			s.rcvbuf, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
			var st unix.Stat_t
			if unix.Fstat(int(fd), &st) == nil {
				s.inode = st.Ino
			}
		})
		in.procs.track(s.inode)
		in.socks = append(in.socks, s)
	}
	eff := in.socks[first].rcvbuf
	in.log.Info("udp intake listening", "addr", addr, "port", port, "sockets", in.cfg.Sockets,
		"rcvbuf_requested", in.cfg.RcvBuf, "rcvbuf_effective", eff, "batch", in.cfg.Batch, "max_datagram", in.cfg.MaxDatagram)
	// The kernel doubles the value it is given (bookkeeping overhead) and
	// reports the doubled size.
	if eff/2 < in.cfg.RcvBuf {
		in.log.Warn("udp receive buffer smaller than asked: bursts may be dropped by the kernel; run as root / with CAP_NET_ADMIN, or raise the limit",
			"addr", addr, "rcvbuf_requested", in.cfg.RcvBuf, "rcvbuf_effective", eff,
			"fix", "sysctl -w net.core.rmem_max="+strconv.Itoa(in.cfg.RcvBuf))
	}
	return nil
}

// control sets the socket options before bind.
func (in *Intake) control(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		f := int(fd)
		if serr = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
			serr = fmt.Errorf("SO_REUSEPORT: %w", serr)
			return
		}
		// SO_RCVBUFFORCE ignores net.core.rmem_max but needs
		// CAP_NET_ADMIN; SO_RCVBUF is capped at rmem_max.
		if unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, in.cfg.RcvBuf) != nil {
			_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, in.cfg.RcvBuf)
		}
		// Optional: drop counts and kernel timestamps in each message.
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// Addrs returns the local address of every socket (several per configured
// address), e.g. to learn the port picked for port 0.
func (in *Intake) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(in.socks))
	for i, s := range in.socks {
		out[i] = s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return out
}

// Run reads every socket, one goroutine each, and calls handle with each
// batch of datagrams it reads. handle is called concurrently from those
// goroutines; the batch and its Data buffers are reused once it returns.
//
// When ctx ends, the sockets refuse new datagrams, their queues are read
// (handle still gets them) until empty or Config.StopRead has passed,
// what is left is counted (Stats.StopDropped), and Run closes the sockets
// and returns nil. Close instead closes them at once: what is queued is
// lost. Run returns nil when ctx ends or the intake is closed, or the
// first read error otherwise. Run may be called once.
func (in *Intake) Run(ctx context.Context, handle func(batch []Datagram)) error {
	if !in.running.CompareAndSwap(false, true) {
		return errors.New("udpin: Run called twice")
	}
	stop := context.AfterFunc(ctx, in.beginStop)
	defer stop()
	errc := make(chan error, len(in.socks))
	var wg sync.WaitGroup
	for _, s := range in.socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- in.readLoop(s, handle)
		}()
	}
	var first error
	for range in.socks {
		if err := <-errc; err != nil && first == nil {
			first = err
			in.Close() // one socket failing stops the intake: Run's caller decides
		}
	}
	wg.Wait()
	in.Close()
	in.logStop()
	return first
}

// Close closes every socket; Run then returns. It is safe to call more than
// once and concurrently with Run.
func (in *Intake) Close() {
	in.closeMu.Lock()
	defer in.closeMu.Unlock()
	if in.closed {
		return
	}
	in.closed = true
	in.procs.mu.Lock()
	in.procs.refresh() // last drop counts while the sockets still exist
	in.procs.mu.Unlock()
	for _, s := range in.socks {
		s.conn.Close()
	}
	in.procs.mu.Lock()
	in.procs.close()
	in.procs.mu.Unlock()
}
