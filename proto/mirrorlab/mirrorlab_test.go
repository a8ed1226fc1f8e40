package mirrorlab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mirrorSink counts the VXLAN datagrams a plain UDP socket in the target
// namespace receives and checks what they carry.
type mirrorSink struct {
	mu        sync.Mutex
	packets   uint64
	bad       uint64
	maxInner  int
	fromExt   uint64 // inner IPv4 source = ExtAddr
	fromProd  uint64 // inner IPv4 source = ProdAddr
	wrongVNI  uint64
	outerSrcs map[netip.Addr]bool
}

func (s *mirrorSink) add(b []byte, src netip.Addr, vni uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.packets++
	if s.outerSrcs == nil {
		s.outerSrcs = map[netip.Addr]bool{}
	}
	s.outerSrcs[src] = true
	if len(b) < 8+14+20 || b[0] != 0x08 {
		s.bad++
		return
	}
	if binary.BigEndian.Uint32(b[4:8])>>8 != vni {
		s.wrongVNI++
	}
	inner := b[8:]
	s.maxInner = max(s.maxInner, len(inner))
	if binary.BigEndian.Uint16(inner[12:14]) != 0x0800 {
		s.bad++
		return
	}
	ipSrc, _ := netip.AddrFromSlice(inner[14+12 : 14+16])
	switch ipSrc {
	case ExtAddr:
		s.fromExt++
	case ProdAddr:
		s.fromProd++
	default:
		s.bad++
	}
}

func (s *mirrorSink) count() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.packets
}

// listenMirror opens a UDP socket in the target namespace and counts what
// arrives until the test ends.
func listenMirror(t *testing.T, l *Lab) *mirrorSink {
	t.Helper()
	pc, err := ListenPacket(l.Target, "udp4", l.TargetAddrPort().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = pc.(*net.UDPConn).SetReadBuffer(32 << 20)
	t.Cleanup(func() { pc.Close() })
	s := &mirrorSink{}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, addr, err := pc.(*net.UDPConn).ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.add(buf[:n], addr.Addr(), l.VNI)
		}
	}()
	return s
}

// waitFor polls cond for up to 60 s.
func waitFor(t *testing.T, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, state())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func counters(t *testing.T, l *Lab) Counters {
	t.Helper()
	c, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMirrorBothDirections(t *testing.T) {
	l := New(t, Options{VNI: 5569041})
	sink := listenMirror(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 4 << 20
	if err := l.TCPTransfer(ctx, ExtToProd, n); err != nil {
		t.Fatal(err)
	}
	if err := l.TCPTransfer(ctx, ProdToExt, n); err != nil {
		t.Fatal(err)
	}
	var c Counters
	waitFor(t, "the target to receive every mirror packet", func() bool {
		c = counters(t, l)
		return c.Sent > 0 && sink.count() == c.Sent && c.Sent == c.MirredPackets
	}, func() string { return fmt.Sprintf("received %d, counters %+v", sink.count(), c) })
	t.Logf("counters: %+v", c)
	if c.VXLAN.TxPackets != c.Sent {
		t.Errorf("VXLAN device counted %d packets sent, the mirror link %d", c.VXLAN.TxPackets, c.Sent)
	}
	if c.PathDrops != 0 || c.TargetUDP.RcvbufErrors != 0 || c.TargetUDP.InErrors != 0 {
		t.Errorf("target UDP errors: %+v", c.TargetUDP)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.bad != 0 || sink.wrongVNI != 0 {
		t.Errorf("%d malformed mirror packets, %d with a wrong VNI", sink.bad, sink.wrongVNI)
	}
	// 4 MiB each way in <= 1448-byte segments: at least ~2900 data frames
	// each way, plus ACKs.
	if sink.fromExt < n/1448 || sink.fromProd < n/1448 {
		t.Errorf("mirrored %d frames from ext and %d from prod; want >= %d each", sink.fromExt, sink.fromProd, n/1448)
	}
	if sink.maxInner != 1514 {
		t.Errorf("largest mirrored frame %d bytes, want 1514 (no offload super-frames, no truncation)", sink.maxInner)
	}
	if len(sink.outerSrcs) != 1 || !sink.outerSrcs[MirrorSrc] {
		t.Errorf("outer sources %v, want only %v", sink.outerSrcs, MirrorSrc)
	}
}

// TestMirrorJumbo: a 9001-byte production link (AWS's jumbo MTU) is
// mirrored whole: 9015-byte inner frames in ~9065-byte mirror packets.
func TestMirrorJumbo(t *testing.T) {
	l := New(t, Options{ExtMTU: 9001})
	sink := listenMirror(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.TCPTransfer(ctx, ExtToProd, 2<<20); err != nil {
		t.Fatal(err)
	}
	var c Counters
	waitFor(t, "the target to receive every mirror packet", func() bool {
		c = counters(t, l)
		return c.Sent > 0 && sink.count() == c.Sent && c.Sent == c.MirredPackets
	}, func() string { return fmt.Sprintf("received %d, counters %+v", sink.count(), c) })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.maxInner != 9001+14 || sink.bad != 0 {
		t.Errorf("largest mirrored frame %d bytes (want 9015), %d malformed", sink.maxInner, sink.bad)
	}
}

func TestMirrorInboundOnly(t *testing.T) {
	l := New(t, Options{InboundOnly: true})
	sink := listenMirror(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.TCPTransfer(ctx, ProdToExt, 1<<20); err != nil {
		t.Fatal(err)
	}
	var c Counters
	waitFor(t, "the target to receive every mirror packet", func() bool {
		c = counters(t, l)
		return c.Sent > 0 && sink.count() == c.Sent && c.Sent == c.MirredPackets && c.VXLAN.TxPackets == c.Sent
	}, func() string { return fmt.Sprintf("received %d, counters %+v", sink.count(), c) })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.fromProd != 0 || sink.fromExt == 0 {
		t.Errorf("inbound-only mirror: %d frames from prod (want 0), %d from ext (want ACKs)", sink.fromProd, sink.fromExt)
	}
}

func TestMirrorCongestionDropsOnlyMirror(t *testing.T) {
	l := New(t, Options{TBF: &TBF{Rate: "20mbit", Burst: "16kb", Limit: "32kb"}})
	sink := listenMirror(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The production transfer completes in full (TCPTransfer checks the
	// byte count) although the mirror path is too slow for it.
	if err := l.TCPTransfer(ctx, ExtToProd, 8<<20); err != nil {
		t.Fatal(err)
	}
	var c Counters
	waitFor(t, "mirror packets to be received or dropped", func() bool {
		c = counters(t, l)
		return c.Sent > 0 && sink.count() == c.Sent && c.Sent+c.TBFDrops == c.MirredPackets
	}, func() string { return fmt.Sprintf("received %d, counters %+v", sink.count(), c) })
	t.Logf("counters: %+v", c)
	if c.TBFDrops == 0 {
		t.Errorf("token bucket dropped nothing")
	}
}

func TestDoIsolatesSockets(t *testing.T) {
	l := New(t, Options{})
	// TargetAddr exists only inside the target namespace.
	if pc, err := net.ListenPacket("udp4", l.TargetAddrPort().String()); err == nil {
		pc.Close()
		t.Fatalf("bound %v in the root namespace", l.TargetAddrPort())
	}
	ln, err := Listen(l.Prod, "tcp4", netip.AddrPortFrom(ProdAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := Dial(l.Ext, "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, 2)
	if _, err := c.Read(b); err != nil || string(b) != "hi" {
		t.Fatalf("read %q, %v", b, err)
	}
	out, err := Exec(l.Target, "ip", "-o", "addr", "show", "dev", TargetDev)
	if err != nil || !contains(out, TargetAddr.String()) {
		t.Fatalf("Exec in target: %q, %v", out, err)
	}
	st, err := ReadUDPStats(l.Target)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("target udp: %+v", st)
}

func TestCloseRemovesNamespaces(t *testing.T) {
	if err := Available(); err != nil {
		Unavailable(t, err.Error())
	}
	l, err := Setup(Options{})
	if err != nil {
		Unavailable(t, err.Error())
	}
	names := []string{l.Ext, l.Prod, l.Target}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := os.Stat(netnsDir + "/" + n); err == nil {
			t.Errorf("namespace %s still exists", n)
		}
	}
}

func TestParseSNMPUDP(t *testing.T) {
	in := "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"Udp: 10 1 7 3 6 0 0 0 0\nUdpLite: InDatagrams\nUdpLite: 0\n"
	s, err := ParseSNMPUDP([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if s.InDatagrams != 10 || s.InErrors != 7 || s.RcvbufErrors != 6 || s.NoPorts != 1 {
		t.Fatalf("%+v", s)
	}
	if _, err := ParseSNMPUDP([]byte("Ip: 1\n")); err == nil {
		t.Fatal("no error without Udp line")
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

// TestConcurrentLabs: labs built at the same time (as tests of different
// packages are) do not disturb each other: same addresses, separate
// namespaces, every mirror packet accounted for in each.
func TestConcurrentLabs(t *testing.T) {
	if err := Available(); err != nil {
		Unavailable(t, err.Error())
	}
	const labs = 3
	var wg sync.WaitGroup
	for i := 0; i < labs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := Setup(Options{VNI: uint32(100 + i)})
			if errors.Is(err, ErrNoVXLAN) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			defer l.Close()
			pc, err := ListenPacket(l.Target, "udp4", l.TargetAddrPort().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer pc.Close()
			var got atomic.Uint64
			go func() {
				b := make([]byte, 65535)
				for {
					n, _, err := pc.ReadFrom(b)
					if err != nil {
						return
					}
					if n > 8 && binary.BigEndian.Uint32(b[4:8])>>8 == uint32(100+i) {
						got.Add(1)
					}
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := l.TCPTransfer(ctx, ExtToProd, 2<<20); err != nil {
				t.Error(err)
				return
			}
			deadline := time.Now().Add(60 * time.Second)
			for {
				c, err := l.Counters()
				if err != nil {
					t.Error(err)
					return
				}
				if c.Sent > 0 && c.Sent == c.MirredPackets && got.Load()+c.TargetUDP.RcvbufErrors == c.Sent && c.PathDrops == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Errorf("lab %d: received %d, counters %+v", i, got.Load(), c)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
}

// TestRemoveLeftovers: a namespace left by a process that no longer exists
// is removed; one of a live process (this one) is kept.
func TestRemoveLeftovers(t *testing.T) {
	if err := Available(); err != nil {
		Unavailable(t, err.Error())
	}
	dead := NamePrefix + "2147483646-deadbeef-ext" // no such pid
	mine := newName("keep")
	for _, n := range []string{dead, mine} {
		if err := addNS(n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = deleteNS(n) })
	}
	RemoveLeftovers()
	if _, err := os.Stat(netnsDir + "/" + dead); err == nil {
		t.Errorf("leftover %s not removed", dead)
	}
	if _, err := os.Stat(netnsDir + "/" + mine); err != nil {
		t.Errorf("namespace of a live process removed: %v", err)
	}
}
