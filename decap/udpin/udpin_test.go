package udpin

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collected gathers what an intake hands over, by content.
type collected struct {
	mu   sync.Mutex
	seen map[string]Datagram // key: payload; Data copied
	n    int
}

func (c *collected) handle(batch []Datagram) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]Datagram{}
	}
	for _, d := range batch {
		d.Data = bytes.Clone(d.Data)
		c.seen[string(d.Data)] = d
		c.n++
	}
}

func (c *collected) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// payload returns a datagram of size n whose first bytes identify it.
func payload(id, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + id)
	}
	binary.BigEndian.PutUint32(b, uint32(id))
	binary.BigEndian.PutUint32(b[4:], uint32(n))
	return b
}

func start(t *testing.T, cfg Config) (*Intake, *collected, func() error) {
	t.Helper()
	var logs bytes.Buffer
	in, err := Open(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "rcvbuf_effective") {
		t.Errorf("no receive buffer size logged: %s", logs.String())
	}
	c := &collected{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, c.handle) }()
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			t.Fatal("Run did not return after cancel")
			return nil
		}
	}
	t.Cleanup(func() { cancel(); in.Close() })
	return in, c, stop
}

func TestIPv4AndIPv6WholeDatagrams(t *testing.T) {
	in, c, stop := start(t, Config{Addrs: []string{"127.0.0.1:0", "[::1]:0"}, Sockets: 3, Batch: 8})
	addrs := in.Addrs()
	if len(addrs) != 6 {
		t.Fatalf("%d sockets, want 6", len(addrs))
	}
	if addrs[0].Port() != addrs[1].Port() || addrs[0].Port() != addrs[2].Port() || addrs[3].Port() != addrs[5].Port() {
		t.Fatalf("sockets of one address on different ports: %v", addrs)
	}
	sizes := []int{8, 50, 1550, 9216 + 50, 9001 + 50, 32000}
	type sent struct {
		src, dst netip.AddrPort
		data     []byte
	}
	var all []sent
	id := 0
	for _, dst := range []netip.AddrPort{addrs[0], addrs[3]} {
		maxPayload := 65507 // IPv4
		if dst.Addr().Is6() {
			maxPayload = 65527
		}
		for s := 0; s < 8; s++ { // several source ports: spread over the sockets
			conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range append(sizes, maxPayload) {
				id++
				p := payload(id, n)
				if _, err := conn.Write(p); err != nil {
					t.Fatal(err)
				}
				all = append(all, sent{conn.LocalAddr().(*net.UDPAddr).AddrPort(), dst, p})
			}
			conn.Close()
			// One sender's burst at a time: fits even an unprivileged
			// default-sized receive buffer.
			waitFor(t, "the sender's datagrams", func() bool { return c.count() >= len(all) })
		}
	}
	waitFor(t, "every datagram", func() bool { return c.count() >= len(all) })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	before := time.Now().Add(-time.Hour).UnixNano()
	after := time.Now().Add(time.Hour).UnixNano()
	for _, s := range all {
		d, ok := c.seen[string(s.data)]
		if !ok {
			t.Errorf("datagram of %d bytes to %v not received whole", len(s.data), s.dst)
			continue
		}
		if d.Src != s.src || d.LocalPort != s.dst.Port() {
			t.Errorf("datagram from %v to %v: got Src %v LocalPort %d", s.src, s.dst, d.Src, d.LocalPort)
		}
		if d.TimeNs < before || d.TimeNs > after {
			t.Errorf("timestamp %d is not a capture time", d.TimeNs)
		}
	}
	st := in.Stats()
	if st.Datagrams != uint64(len(all)) || st.Truncated != 0 || st.KernelDrops != 0 {
		t.Errorf("stats %+v, want %d datagrams, no truncation, no drops", st, len(all))
	}
}

func TestDualStackUnmapsIPv4(t *testing.T) {
	in, c, stop := start(t, Config{Addrs: []string{":0"}, Sockets: 2})
	port := in.Addrs()[0].Port()
	for _, host := range []string{"127.0.0.1", "::1"} {
		conn, err := net.Dial("udp", net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("from " + host))
		conn.Close()
	}
	waitFor(t, "two datagrams", func() bool { return c.count() >= 2 })
	stop()
	if d := c.seen["from 127.0.0.1"]; !d.Src.Addr().Is4() || d.Src.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("IPv4 sender reported as %v", d.Src)
	}
	if d := c.seen["from ::1"]; d.Src.Addr() != netip.IPv6Loopback() {
		t.Errorf("IPv6 sender reported as %v", d.Src)
	}
}

func TestOversizedDatagramCountedNotDelivered(t *testing.T) {
	in, c, stop := start(t, Config{Addrs: []string{"127.0.0.1:0"}, Sockets: 1, MaxDatagram: 2000})
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(in.Addrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(payload(1, 3000))
	conn.Write(payload(2, 2000))
	waitFor(t, "the datagram that fits", func() bool { return c.count() >= 1 })
	waitFor(t, "the truncation count", func() bool { return in.Stats().Truncated == 1 })
	stop()
	if c.count() != 1 || len(c.seen[string(payload(2, 2000))].Data) != 2000 {
		t.Errorf("delivered %d datagrams, want only the 2000-byte one", c.count())
	}
}

func TestKernelDropsCounted(t *testing.T) {
	// A tiny buffer and no reader yet: the kernel must drop, and the
	// intake must say how many.
	var logs bytes.Buffer
	in, err := Open(Config{Addrs: []string{"127.0.0.1:0"}, Sockets: 1, RcvBuf: 4096}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(in.Addrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const sent = 300
	for i := 0; i < sent; i++ {
		conn.Write(payload(i, 1000))
	}
	var st Stats
	waitFor(t, "kernel drops to be counted", func() bool {
		st = in.Stats()
		return st.KernelDrops > 0 && st.RcvbufErrors > 0
	})
	c := &collected{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, c.handle) }()
	waitFor(t, "received + dropped = sent", func() bool {
		st = in.Stats()
		return uint64(c.count())+st.KernelDrops == sent
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("received %d, kernel drops %d", c.count(), st.KernelDrops)
}

func TestMetrics(t *testing.T) {
	in, c, stop := start(t, Config{Addrs: []string{"127.0.0.1:0"}, Sockets: 2})
	reg := prometheus.NewRegistry()
	if err := in.Register(reg); err != nil {
		t.Fatal(err)
	}
	conn, _ := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(in.Addrs()[0]))
	conn.Write([]byte("x"))
	conn.Close()
	waitFor(t, "one datagram", func() bool { return c.count() == 1 })
	stop()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[mf.GetName()] += v
		}
	}
	for name, want := range map[string]float64{
		"tapline_decap_udp_datagrams_total":      1,
		"tapline_decap_udp_received_bytes_total": 1,
		"tapline_decap_udp_truncated_total":      0,
		"tapline_decap_udp_kernel_drops_total":   0,
		"tapline_decap_udp_sockets":              2,
		"tapline_decap_udp_stop_dropped_total":   0,
		"tapline_decap_udp_stop_refused_total":   0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	for _, name := range []string{"tapline_decap_udp_rcvbuf_errors_total", "tapline_decap_udp_in_errors_total", "tapline_decap_udp_rcvbuf_bytes", "tapline_decap_udp_queued_bytes"} {
		if _, ok := got[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
}

func TestRunAndCloseLifecycle(t *testing.T) {
	in, err := Open(Config{Addrs: []string{"127.0.0.1:0"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- in.Run(context.Background(), nil) }()
	in.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
	in.Close() // twice is fine
	if err := in.Run(context.Background(), nil); err == nil {
		t.Fatal("second Run did not fail")
	}
}

func TestOpenErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no address":    {},
		"bad address":   {Addrs: []string{"nonsense"}},
		"host name":     {Addrs: []string{"localhost:0"}},
		"bad batch":     {Addrs: []string{"127.0.0.1:0"}, Batch: 5000},
		"bad datagram":  {Addrs: []string{"127.0.0.1:0"}, MaxDatagram: 70000},
		"bad stop read": {Addrs: []string{"127.0.0.1:0"}, StopRead: -time.Second},
	} {
		if in, err := Open(cfg, nil); err == nil {
			in.Close()
			t.Errorf("%s: no error", name)
		}
	}
	// A port already taken by a socket without SO_REUSEPORT.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if in, err := Open(Config{Addrs: []string{pc.LocalAddr().String()}}, nil); err == nil {
		in.Close()
		t.Error("opened a port in use")
	}
}

func TestNaive(t *testing.T) {
	n, err := ListenNaive("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.Run(ctx, func(d Datagram) {
			mu.Lock()
			got = append(got, string(d.Data))
			mu.Unlock()
		})
	}()
	conn, _ := net.Dial("udp", n.Addr().String())
	conn.Write([]byte("a"))
	conn.Write([]byte("bb"))
	conn.Close()
	waitFor(t, "two datagrams", func() bool { d, _ := n.Received(); return d == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, b := n.Received(); b != 3 || len(got) != 2 {
		t.Fatalf("bytes %d, datagrams %v", b, got)
	}
}
