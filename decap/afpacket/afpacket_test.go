package afpacket_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/decap/afpacket"
	"github.com/tapline/tapline/decap/pcapfilter"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// open opens a capture on prod0 inside the lab's production namespace.
func open(t *testing.T, lab *mirrorlab.Lab, cfg afpacket.Config, filter string) *afpacket.Capture {
	t.Helper()
	prog, err := pcapfilter.Assemble(filter, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Iface, cfg.Filter = mirrorlab.ProdDev, prog
	var c *afpacket.Capture
	if err := mirrorlab.Do(lab.Prod, func() (err error) { c, err = afpacket.Open(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// collector gathers captured payloads.
type collector struct {
	mu   sync.Mutex
	pkts []afpacket.Packet
}

func (c *collector) handle(_ int, ps []afpacket.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range ps {
		p.Data = append([]byte(nil), p.Data...)
		c.pkts = append(c.pkts, p)
	}
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pkts)
}

func sendUDP(t *testing.T, ns string, to string, n int) {
	t.Helper()
	// Unconnected: ICMP port unreachable does not fail later writes.
	conn, err := mirrorlab.ListenPacket(ns, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := conn.WriteTo(fmt.Appendf(nil, "datagram %06d to %s", i, to), dst); err != nil {
			t.Fatal(err)
		}
	}
}

func waitLen(t *testing.T, c *collector, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for c.len() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Anything the filter should have dropped would have arrived by now
	// too: wait a little longer for it before counting.
	time.Sleep(200 * time.Millisecond)
}

// TestFilterInKernel: only the frames the filter selects are captured,
// each once (fanout spreads them over the sockets, never duplicates), with
// the direction and the bytes sent.
func TestFilterInKernel(t *testing.T) {
	lab := mirrorlab.New(t, mirrorlab.Options{DeferMirror: true})
	c := open(t, lab, afpacket.Config{Sockets: 3}, "udp and dst port 9999")
	var got collector
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, got.handle) }()
	to := net.JoinHostPort(mirrorlab.ProdAddr.String(), "9999")
	sendUDP(t, lab.Ext, to, 300)
	sendUDP(t, lab.Ext, net.JoinHostPort(mirrorlab.ProdAddr.String(), "9998"), 100)
	waitLen(t, &got, 300)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.len() != 300 {
		t.Fatalf("captured %d frames, want 300", got.len())
	}
	seen := map[string]bool{}
	for _, p := range got.pkts {
		if p.Outgoing {
			t.Fatalf("an inbound frame marked outgoing")
		}
		payload := string(p.Data[14+20+8:])
		if seen[payload] {
			t.Fatalf("frame %q captured twice", payload)
		}
		seen[payload] = true
		if p.WireLen != len(p.Data) || p.TimeNs == 0 {
			t.Fatalf("wire length %d, captured %d, time %d", p.WireLen, len(p.Data), p.TimeNs)
		}
	}
	var n uint64
	for _, s := range c.Stats() {
		n += s.Packets
		if s.KernelDrops != 0 {
			t.Errorf("socket %d: %d kernel drops", s.Socket, s.KernelDrops)
		}
	}
	if n != 300 {
		t.Errorf("stats count %d frames, want 300", n)
	}
}

// TestOutbound: "outbound" selects the frames the host sends.
func TestOutbound(t *testing.T) {
	lab := mirrorlab.New(t, mirrorlab.Options{DeferMirror: true})
	c := open(t, lab, afpacket.Config{Sockets: 1}, "outbound and udp port 7777")
	var got collector
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, got.handle) }()
	sendUDP(t, lab.Prod, net.JoinHostPort(mirrorlab.ExtAddr.String(), "7777"), 50)
	sendUDP(t, lab.Ext, net.JoinHostPort(mirrorlab.ProdAddr.String(), "7777"), 50)
	waitLen(t, &got, 50)
	if got.len() != 50 {
		t.Fatalf("captured %d frames, want the 50 sent", got.len())
	}
	for _, p := range got.pkts {
		if !p.Outgoing {
			t.Fatal("a received frame passed the outbound filter")
		}
	}
}

// TestKernelDrops: a socket whose queue overflows while nobody reads
// reports the kernel's drops, and what was read plus what was dropped is
// everything sent.
func TestKernelDrops(t *testing.T) {
	lab := mirrorlab.New(t, mirrorlab.Options{DeferMirror: true})
	c := open(t, lab, afpacket.Config{Sockets: 1, RcvBuf: 1}, "udp port 9999")
	const sent = 2000
	sendUDP(t, lab.Ext, net.JoinHostPort(mirrorlab.ProdAddr.String(), "9999"), sent)
	time.Sleep(200 * time.Millisecond)
	st := c.Stats()[0]
	if st.KernelDrops == 0 {
		t.Fatalf("no kernel drops with a minimal receive queue: %+v", st)
	}
	var got collector
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, got.handle) }()
	want := int(sent - st.KernelDrops)
	waitLen(t, &got, want)
	st = c.Stats()[0]
	if got.len() != want || st.KernelPackets != sent || st.Packets+st.KernelDrops != sent {
		t.Fatalf("read %d, stats %+v; sent %d", got.len(), st, sent)
	}
}
