package udpin

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/tapline/tapline/decap/mmsg"
)

// Naive is the baseline reader every intake is compared with: one socket
// with the kernel's default receive buffer, one ReadFrom system call per
// datagram. It is what a first UDP receiver looks like, and it loses most
// of a mirror burst. For tests and benchmarks only.
type Naive struct {
	conn    *net.UDPConn
	packets atomic.Uint64
	bytes   atomic.Uint64
}

// ListenNaive opens the naive reader's socket on addr ("host:port"). Like
// Open, it creates the socket at call time (so it can run inside
// mirrorlab.Do).
func ListenNaive(addr string) (*Naive, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	return &Naive{conn: c}, nil
}

// Run reads datagrams one by one until ctx ends or Close, calling handle
// (if not nil) for each; Data is reused after handle returns.
func (n *Naive) Run(ctx context.Context, handle func(Datagram)) error {
	stop := context.AfterFunc(ctx, func() { n.conn.Close() })
	defer stop()
	port := n.conn.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	buf := make([]byte, 65535)
	for {
		k, src, err := n.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if mmsg.IsClosed(err) {
				return nil
			}
			return err
		}
		n.packets.Add(1)
		n.bytes.Add(uint64(k))
		if handle != nil {
			handle(Datagram{Data: buf[:k], Src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), LocalPort: port, TimeNs: time.Now().UnixNano()})
		}
	}
}

// Addr is the socket's local address.
func (n *Naive) Addr() net.Addr { return n.conn.LocalAddr() }

// Received returns the datagrams and bytes read so far.
func (n *Naive) Received() (datagrams, bytes uint64) {
	return n.packets.Load(), n.bytes.Load()
}

// Close closes the socket; Run returns.
func (n *Naive) Close() { n.conn.Close() }
