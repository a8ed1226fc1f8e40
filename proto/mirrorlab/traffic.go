package mirrorlab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// Direction of a TCP transfer over the mirrored link.
type Direction int

// Directions.
const (
	ExtToProd Direction = iota // ext sends, prod receives (the mirror's ingress side)
	ProdToExt                  // prod sends, ext receives
)

// TCPTransfer pushes n bytes of payload over one TCP connection between ext
// and prod, as fast as the kernel allows, and returns when the receiver has
// read them all (or ctx ends). Every frame of the connection, both ways, is
// mirrored (only the ext->prod ones with InboundOnly).
func (l *Lab) TCPTransfer(ctx context.Context, dir Direction, n int64) error {
	srvNS, srvAddr, cliNS := l.Prod, ProdAddr, l.Ext
	if dir == ProdToExt {
		srvNS, srvAddr, cliNS = l.Ext, ExtAddr, l.Prod
	}
	ln, err := Listen(srvNS, "tcp4", netip.AddrPortFrom(srvAddr, 0).String())
	if err != nil {
		return err
	}
	defer ln.Close()
	// The dialling side sends; the listening side reads and counts.
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
		defer stop()
		got, err := io.Copy(io.Discard, c)
		done <- result{got, err}
	}()
	c, err := DialContext(cliNS)(ctx, "tcp4", ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	left := n
	for left > 0 {
		chunk := buf
		if int64(len(chunk)) > left {
			chunk = chunk[:left]
		}
		w, err := c.Write(chunk)
		left -= int64(w)
		if err != nil {
			return fmt.Errorf("mirrorlab: tcp transfer: write: %w", err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	r := <-done
	if r.err != nil {
		return fmt.Errorf("mirrorlab: tcp transfer: read: %w", r.err)
	}
	if r.n != n {
		return fmt.Errorf("mirrorlab: tcp transfer: received %d of %d bytes", r.n, n)
	}
	return nil
}
