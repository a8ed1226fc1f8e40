// Package send implements `decap send`: it re-encapsulates the frames of a
// capture file the way AWS does and sends them to a target, so anyone can
// exercise decap (or any mirror target) without AWS.
//
// VXLAN: flags 0x08, the VNI, outer UDP source port from the inner flow
// hash (so one flow keeps one source port, as with AWS), UDP checksum 0
// (over IPv4; IPv6 keeps its checksum).
// GENEVE (--geneve): protocol 0x6558 for Ethernet frames or 0x0800/0x86DD
// for raw IP, with AWS Gateway Load Balancer options (class 0x0108). Frames
// of an encapsulated capture are decapsulated first, so any capture
// decap reads can be sent.
package send

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/tapline/tapline/decap/capture"
	"github.com/tapline/tapline/decap/decode"
	"github.com/tapline/tapline/decap/geneve"
	"github.com/tapline/tapline/decap/vxlan"
	"github.com/tapline/tapline/proto/flow"
)

// Config is what `decap send` does.
type Config struct {
	File   string  // capture to send (pcap or pcapng)
	To     string  // HOST:PORT of the target (port defaults to 4789, or 6081 with GENEVE)
	VNI    int     // VNI to send with; -1 keeps the capture's (0 for plain captures)
	GENEVE bool    // GENEVE with AWS options instead of VXLAN
	Speed  float64 // pacing factor of the original timing (2 = twice as fast)
	Top    bool    // as fast as possible, ignoring timestamps
	Loop   int     // times to send the capture; 0 = until interrupted
	// MaxSockets bounds the sockets opened to give each flow its own
	// source port (0: 256); flows beyond share one socket.
	MaxSockets int
}

// Register adds send's flags to fs.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.To, "to", "", "target HOST:PORT (port default 4789, 6081 with --geneve)")
	fs.IntVar(&c.VNI, "vni", -1, "VNI to send with (default: the capture's VNI, 0 for plain captures)")
	fs.BoolVar(&c.GENEVE, "geneve", false, "send GENEVE with AWS Gateway Load Balancer options instead of VXLAN")
	fs.Float64Var(&c.Speed, "speed", 1, "replay at this multiple of the original speed")
	fs.BoolVar(&c.Top, "top", false, "send as fast as possible, ignoring timestamps")
	fs.IntVar(&c.Loop, "loop", 1, "send the capture this many times (0: until interrupted)")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.File == "" {
		return errors.New("usage: decap send FILE --to HOST:PORT [--vni N] [--geneve] [--speed X | --top] [--loop N]")
	}
	if c.To == "" {
		return errors.New("--to HOST:PORT is required")
	}
	if c.VNI < -1 || c.VNI > 0xffffff {
		return fmt.Errorf("--vni must be between 0 and 16777215, got %d", c.VNI)
	}
	if !c.Top && !(c.Speed > 0) {
		return fmt.Errorf("--speed must be positive, got %v", c.Speed)
	}
	if c.Loop < 0 {
		return fmt.Errorf("--loop must not be negative, got %d", c.Loop)
	}
	return nil
}

// Result counts what was sent.
type Result struct {
	Packets int64 // datagrams sent
	Bytes   int64 // inner frame bytes sent
	Skipped int64 // frames not sent (too large for one datagram, or send errors)
}

// Main runs `decap send` with command-line args (after "send") and returns
// the exit code.
func Main(args []string) int {
	var c Config
	fs := flag.NewFlagSet("decap send", flag.ContinueOnError)
	c.Register(fs)
	// FILE may come first or after the flags.
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		c.File, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if c.File == "" && fs.NArg() > 0 {
		c.File = fs.Arg(0)
	}
	if err := c.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "decap send: %v\n", err)
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("stage", "decap-send")
	res, err := Send(ctx, c, log)
	log.Info("sent", "packets", res.Packets, "bytes", res.Bytes, "skipped", res.Skipped)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "decap send: %v\n", err)
		return 1
	}
	return 0
}

// Send sends the capture cfg.File to cfg.To until done or ctx ends.
func Send(ctx context.Context, cfg Config, log *slog.Logger) (Result, error) {
	var res Result
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	dst, err := resolve(cfg.To, cfg.GENEVE)
	if err != nil {
		return res, err
	}
	s := newSockets(dst, cfg.MaxSockets)
	defer s.close()
	if _, err := s.get(0); err != nil {
		return res, err
	}
	start := time.Now()
	var loopOff int64 // virtual (capture) time sent in earlier loops
	for loop := 0; cfg.Loop == 0 || loop < cfg.Loop; loop++ {
		first, last := int64(-1), int64(0)
		pace := func(ts int64) {
			if first < 0 {
				first = ts
			}
			last = ts
			if cfg.Top {
				return
			}
			due := start.Add(time.Duration(float64(loopOff+ts-first) / cfg.Speed))
			if d := time.Until(due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
		}
		if err := sendOnce(ctx, cfg, s, &res, pace); err != nil {
			return res, err
		}
		if first >= 0 && last > first {
			loopOff += last - first
		}
		log.Debug("capture sent", "loop", loop+1, "packets", res.Packets)
	}
	return res, nil
}

func resolve(to string, gen bool) (netip.AddrPort, error) {
	host, port := to, ""
	if h, p, err := net.SplitHostPort(to); err == nil {
		host, port = h, p
	}
	pn := vxlan.Port
	if gen {
		pn = geneve.Port
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return netip.AddrPort{}, fmt.Errorf("--to %q: bad port", to)
		}
		pn = n
	}
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("--to %q: cannot resolve host: %v", to, err)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(pn)), nil
}

// sendOnce sends the file once; pace is called with each frame's
// timestamp before it is sent.
func sendOnce(ctx context.Context, cfg Config, s *sockets, res *Result, pace func(int64)) error {
	f, err := os.Open(cfg.File)
	if err != nil {
		return err
	}
	defer f.Close()
	cr, err := capture.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.File, err)
	}
	dec := decode.New(decode.Config{SkipChecksums: true}, decode.NewStats())
	var cp capture.Packet
	var p decode.Packet
	buf := make([]byte, 0, 70000)
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := cr.Next(&cp); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%s: %w", cfg.File, err)
		}
		if !dec.Captured(&p, cp.LinkType, cp.Data, cp.TimeNs, cp.Iface) {
			res.Skipped++
			continue
		}
		vni := p.Frame.VNI
		if cfg.VNI >= 0 {
			vni = uint32(cfg.VNI)
		}
		var hash uint64
		if p.HasFlow {
			hash = p.Key.Hash()
		}
		buf = Encapsulate(buf[:0], cfg.GENEVE, vni, p.Frame.Link, p.Frame.Data, hash)
		if len(buf) > 65507 {
			res.Skipped++
			continue
		}
		pace(cp.TimeNs)
		conn, err := s.get(hash)
		if err != nil {
			return err
		}
		if _, err := conn.WriteToUDPAddrPort(buf, s.dst); err != nil {
			res.Skipped++
			continue
		}
		res.Packets++
		res.Bytes += int64(len(p.Frame.Data))
	}
}

// Encapsulate appends to dst the UDP payload that carries one inner frame:
// a VXLAN header (flags 0x08) and an Ethernet frame (raw IP frames get a
// locally administered Ethernet header), or with gen a GENEVE header with
// AWS options and the frame as it is. hash (the inner flow hash) is used
// for the AWS flow cookie.
func Encapsulate(dst []byte, gen bool, vni uint32, link flow.LinkType, frame []byte, hash uint64) []byte {
	if gen {
		proto := uint16(geneve.ProtoEthernet)
		if link == flow.LinkRaw {
			proto = geneve.ProtoIPv4
			if len(frame) > 0 && frame[0]>>4 == 6 {
				proto = geneve.ProtoIPv6
			}
		}
		dst = geneve.Append(dst, proto, vni, geneve.AWSOptions(0x0e11a5e5c0ffee00, 0x0a77ac4000000001, uint32(hash))...)
		return append(dst, frame...)
	}
	dst = vxlan.Append(dst, vni)
	if link == flow.LinkRaw {
		et := uint16(0x0800)
		if len(frame) > 0 && frame[0]>>4 == 6 {
			et = 0x86dd
		}
		dst = append(dst, 0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01)
		dst = binary.BigEndian.AppendUint16(dst, et)
	}
	return append(dst, frame...)
}

// SourcePort is the outer UDP source port for a flow hash, in the dynamic
// range as AWS does.
func SourcePort(hash uint64) uint16 {
	return uint16(49152 + hash%16384)
}

// sockets gives each flow a socket bound to its source port.
type sockets struct {
	dst  netip.AddrPort
	max  int
	byPt map[uint16]*net.UDPConn
	def  *net.UDPConn
}

func newSockets(dst netip.AddrPort, max int) *sockets {
	if max <= 0 {
		max = 256
	}
	return &sockets{dst: dst, max: max, byPt: map[uint16]*net.UDPConn{}}
}

func (s *sockets) get(hash uint64) (*net.UDPConn, error) {
	if s.def == nil {
		c, err := s.open(0)
		if err != nil {
			return nil, fmt.Errorf("open UDP socket: %w", err)
		}
		s.def = c
	}
	if hash == 0 {
		return s.def, nil
	}
	port := SourcePort(hash)
	if c := s.byPt[port]; c != nil {
		return c, nil
	}
	if len(s.byPt) >= s.max {
		return s.def, nil
	}
	c, err := s.open(port)
	if err != nil {
		// Port in use: share the default socket for this flow.
		s.byPt[port] = s.def
		return s.def, nil
	}
	s.byPt[port] = c
	return c, nil
}

func (s *sockets) open(port uint16) (*net.UDPConn, error) {
	network, laddr := "udp4", netip.AddrPortFrom(netip.IPv4Unspecified(), port)
	if s.dst.Addr().Is6() {
		network, laddr = "udp6", netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(laddr))
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteBuffer(4 << 20)
	noChecksum(c, s.dst.Addr().Is6())
	return c, nil
}

// noChecksum asks Linux to send UDP checksum 0 over IPv4, as AWS does
// (best effort). Over IPv6 a zero checksum is only accepted by receivers
// that opt in (UDP_NO_CHECK6_RX), so IPv6 keeps its checksum.
func noChecksum(c *net.UDPConn, v6 bool) {
	if v6 {
		return
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		const soNoCheck = 11
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soNoCheck, 1)
	})
}

func (s *sockets) close() {
	closed := map[*net.UDPConn]bool{}
	for _, c := range s.byPt {
		if !closed[c] {
			closed[c] = true
			c.Close()
		}
	}
	if s.def != nil && !closed[s.def] {
		s.def.Close()
	}
}
