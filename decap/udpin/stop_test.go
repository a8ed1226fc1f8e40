package udpin

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// idSet records the ids (first 4 payload bytes) handed to handle.
type idSet struct {
	mu   sync.Mutex
	seen map[uint32]int
	n    int
}

func (s *idSet) add(batch []Datagram) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[uint32]int{}
	}
	for _, d := range batch {
		s.seen[binary.BigEndian.Uint32(d.Data)]++
		s.n++
	}
}

// check fails on a datagram handed over twice and returns how many were.
func (s *idSet) check(t *testing.T) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, n := range s.seen {
		if n != 1 {
			t.Errorf("datagram %d handed over %d times", id, n)
		}
	}
	return s.n
}

// senders are UDP sockets sending numbered datagrams to one address,
// round robin, so that SO_REUSEPORT spreads them over the sockets.
type senders struct {
	conns []*net.UDPConn
	next  atomic.Uint32 // id of the next datagram
}

func newSenders(t *testing.T, in *Intake, n int) *senders {
	t.Helper()
	s := &senders{}
	for range n {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(in.Addrs()[0]))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s.conns = append(s.conns, c)
	}
	return s
}

// send sends one datagram and returns its id.
func (s *senders) send(t *testing.T) uint32 {
	id := s.next.Load()
	if _, err := s.conns[int(id)%len(s.conns)].Write(payload(int(id), 200)); err != nil {
		t.Errorf("send %d: %v", id, err)
	}
	s.next.Store(id + 1)
	return id
}

// waitQueued waits until the sockets' receive queues stop growing: every
// datagram sent has reached them.
func waitQueued(t *testing.T, in *Intake) {
	t.Helper()
	last := in.Stats().QueuedBytes
	for stable := 0; stable < 5; {
		time.Sleep(10 * time.Millisecond)
		q := in.Stats().QueuedBytes
		if q == last {
			stable++
		} else {
			stable = 0
		}
		last = q
	}
}

// Datagrams queued in the kernel when the context ends are read and handed
// over (StopRead long enough), or counted as StopDropped (StopRead too
// short for a slow handler): none is lost uncounted.
func TestStopReadsQueue(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stopRead time.Duration
		perBatch time.Duration // handler time per batch once released
		dropped  bool          // StopDropped must be > 0
	}{
		{"all read", 30 * time.Second, 0, false},
		{"bounded", 50 * time.Millisecond, time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const sent = 5000
			var logs syncBuffer
			in, err := Open(Config{Addrs: []string{"127.0.0.1:0"}, Sockets: 2, RcvBuf: 64 << 20, Batch: 8, StopRead: tc.stopRead},
				slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(in.Close)
			// The handler holds its first batches until the context ended,
			// so the datagrams pile up in the kernel queues.
			release := make(chan struct{})
			var ids idSet
			handle := func(batch []Datagram) {
				<-release
				time.Sleep(tc.perBatch)
				ids.add(batch)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- in.Run(ctx, handle) }()
			out := newSenders(t, in, 8)
			for range sent {
				out.send(t)
			}
			waitQueued(t, in)
			if st := in.Stats(); st.KernelDrops != 0 {
				t.Fatalf("%d kernel drops before the stop: the receive buffer is too small for the test", st.KernelDrops)
			}
			cancel()
			time.Sleep(20 * time.Millisecond) // the stop begins while the handler is busy
			close(release)
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			handled := ids.check(t)
			st := in.Stats()
			t.Logf("handled %d, stop dropped %d, stop refused %d", handled, st.StopDropped, st.StopRefused)
			if uint64(handled)+st.StopDropped != sent || st.StopRefused != 0 || st.KernelDrops != 0 {
				t.Errorf("sent %d: handled %d + stop dropped %d (refused %d, kernel drops %d): datagrams lost uncounted",
					sent, handled, st.StopDropped, st.StopRefused, st.KernelDrops)
			}
			if st.Datagrams != uint64(handled) {
				t.Errorf("Stats.Datagrams %d, handled %d", st.Datagrams, handled)
			}
			if tc.dropped != (st.StopDropped > 0) {
				t.Errorf("stop dropped %d with StopRead %v", st.StopDropped, tc.stopRead)
			}
			warned := strings.Contains(logs.String(), "level=WARN msg=\"udp intake stopped with datagrams still queued")
			if warned != tc.dropped {
				t.Errorf("stop drops logged at WARN: %v, want %v; logs:\n%s", warned, tc.dropped, logs.String())
			}
		})
	}
}

// A sender that keeps sending during the stop: Run returns within
// StopRead (plus a margin), and what arrives once the filter is attached
// is refused and counted, never handed over.
func TestStopIsBounded(t *testing.T) {
	const stopRead = 300 * time.Millisecond
	in, err := Open(Config{Addrs: []string{"127.0.0.1:0"}, Sockets: 2, RcvBuf: 64 << 20, Batch: 8, StopRead: stopRead}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	// A slow handler: 4000 datagrams a second, so the queue outlasts StopRead.
	var ids idSet
	handle := func(batch []Datagram) {
		time.Sleep(2 * time.Millisecond)
		ids.add(batch)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, handle) }()
	out := newSenders(t, in, 8)
	for range 5000 {
		out.send(t)
	}
	cancel()
	began := time.Now()
	// Keep sending; the first refusal says the filter is attached.
	refusedFrom := uint32(0)
	for time.Since(began) < stopRead/2 {
		id := out.send(t)
		if refusedFrom == 0 && in.Stats().StopRefused > 0 {
			refusedFrom = id + 1
		}
	}
	sent := out.next.Load()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	took := time.Since(began)
	if took > stopRead+time.Second {
		t.Errorf("Run returned %v after the context ended, StopRead %v", took, stopRead)
	}
	handled := ids.check(t)
	st := in.Stats()
	t.Logf("Run returned after %v; sent %d (refusals seen from %d), handled %d, stop dropped %d, stop refused %d",
		took, sent, refusedFrom, handled, st.StopDropped, st.StopRefused)
	if refusedFrom == 0 {
		t.Fatal("no datagram refused once the stop began")
	}
	ids.mu.Lock()
	for id := range ids.seen {
		if id >= refusedFrom {
			t.Errorf("datagram %d, sent after the filter was attached, was handed over", id)
		}
	}
	ids.mu.Unlock()
	if st.StopDropped == 0 {
		t.Error("nothing stop dropped: the queue did not outlast StopRead")
	}
	if uint64(handled)+st.StopDropped+st.StopRefused+st.KernelDrops != uint64(sent) {
		t.Errorf("sent %d: handled %d + stop dropped %d + refused %d + kernel drops %d: datagrams lost uncounted",
			sent, handled, st.StopDropped, st.StopRefused, st.KernelDrops)
	}
}

// A context that ended before Run: the queue is still read.
func TestStopBeforeRun(t *testing.T) {
	in, err := Open(Config{Addrs: []string{"127.0.0.1:0"}, Sockets: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	out := newSenders(t, in, 4)
	for range 100 {
		out.send(t)
	}
	waitQueued(t, in)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var ids idSet
	if err := in.Run(ctx, ids.add); err != nil {
		t.Fatal(err)
	}
	if n := ids.check(t); n != 100 {
		t.Errorf("handled %d of 100", n)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
