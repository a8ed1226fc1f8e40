package afpacket_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapline/tapline/decap/afpacket"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// waitQueued waits until the kernel has queued n frames on c's sockets.
func waitQueued(t *testing.T, c *afpacket.Capture, n uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var q uint64
		for _, s := range c.Stats() {
			q += s.KernelPackets
		}
		if q >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the kernel did not queue %d frames", n)
}

// numbers are the datagram numbers sendUDP put in the captured frames.
func numbers(t *testing.T, pkts []afpacket.Packet) map[int]bool {
	t.Helper()
	seen := map[int]bool{}
	for _, p := range pkts {
		var i int
		payload := string(p.Data[14+20+8:])
		if _, err := fmt.Sscanf(payload, "datagram %d", &i); err != nil {
			t.Fatalf("frame %q: %v", payload, err)
		}
		seen[i] = true
	}
	return seen
}

// TestStopReadsQueue: frames queued in the kernel when the context ends
// are handed to the handler before Run returns (the handler was stuck
// while they arrived), or, past StopRead, counted as StopDropped.
func TestStopReadsQueue(t *testing.T) {
	lab := mirrorlab.New(t, mirrorlab.Options{DeferMirror: true})
	c := open(t, lab, afpacket.Config{Sockets: 2, Batch: 16, StopRead: 20 * time.Second}, "udp and dst port 9999")
	var got collector
	gate := make(chan struct{})
	handle := func(sock int, ps []afpacket.Packet) {
		<-gate // slow at first: frames queue in the kernel meanwhile
		got.handle(sock, ps)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, handle) }()
	const sent = 3000
	sendUDP(t, lab.Ext, net.JoinHostPort(mirrorlab.ProdAddr.String(), "9999"), sent)
	waitQueued(t, c, sent)
	cancel()
	time.Sleep(100 * time.Millisecond)
	close(gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	st := c.StopStats()
	seen := numbers(t, got.pkts)
	var missing []string
	for i := 0; i < sent; i++ {
		if !seen[i] {
			missing = append(missing, fmt.Sprint(i))
		}
	}
	if len(missing) > 0 || st.Dropped != 0 {
		t.Fatalf("%d of %d frames not handled (stop stats %+v); first missing: %s",
			len(missing), sent, st, strings.Join(missing[:min(10, len(missing))], " "))
	}
	if !st.Stopped || st.Read == 0 {
		t.Errorf("stop stats %+v: want a stop that read the queue", st)
	}
}

// TestStopReadBounded: while a sender keeps sending and the handler is
// slow, Run returns within StopRead plus a small margin, and every frame
// the kernel queued is handled or counted.
func TestStopReadBounded(t *testing.T) {
	lab := mirrorlab.New(t, mirrorlab.Options{DeferMirror: true})
	const stopRead = 300 * time.Millisecond
	c := open(t, lab, afpacket.Config{Sockets: 2, Batch: 16, StopRead: stopRead}, "udp and dst port 9999")
	var got collector
	var slow atomic.Bool
	handle := func(sock int, ps []afpacket.Packet) {
		if slow.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		got.handle(sock, ps)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, handle) }()
	stopSend := make(chan struct{})
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		conn, err := mirrorlab.ListenPacket(lab.Ext, "udp", ":0")
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		dst := &net.UDPAddr{IP: mirrorlab.ProdAddr.AsSlice(), Port: 9999}
		for i := 0; ; i++ {
			select {
			case <-stopSend:
				return
			default:
			}
			if _, err := conn.WriteTo(fmt.Appendf(nil, "datagram %06d", i), dst); err != nil {
				t.Error(err)
				return
			}
			if i%64 == 63 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	defer func() { close(stopSend); <-sending }()
	slow.Store(true)
	waitQueued(t, c, 5000)
	cancel()
	began := time.Now()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > stopRead+500*time.Millisecond {
		t.Errorf("Run returned %v after the context ended, StopRead %v", took, stopRead)
	}
	st := c.StopStats()
	var queued, drops uint64
	for _, s := range c.Stats() {
		queued += s.KernelPackets
		drops += s.KernelDrops + s.StopRefused
	}
	if handled := uint64(got.len()); handled+st.Dropped+drops != queued {
		t.Errorf("handled %d + stop dropped %d + kernel drops %d != %d queued by the kernel (stop stats %+v)",
			handled, st.Dropped, drops, queued, st)
	}
	if st.Dropped == 0 {
		t.Logf("the queue was read empty within StopRead (stop stats %+v)", st)
	}
}
