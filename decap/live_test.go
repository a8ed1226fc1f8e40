package decap

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/send"
	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// startListening runs decap on an intake bound to 127.0.0.1 (free ports)
// and returns the VXLAN and GENEVE ports, the NATS URL and a stop function
// that returns Run's error.
func startListening(t *testing.T, mod func(*Config)) (vx, gen uint16, url string, d stage.Deps, stop func() error) {
	t.Helper()
	_, url = natstest.Run(t)
	return startListeningURL(t, url, mod)
}

// startListeningURL is startListening with a given NATS server.
func startListeningURL(t *testing.T, url string, mod func(*Config)) (vx, gen uint16, _ string, d stage.Deps, stop func() error) {
	return startListeningAt(t, "127.0.0.1", url, mod)
}

// startListeningAt is startListening on a given loopback address.
func startListeningAt(t *testing.T, host, url string, mod func(*Config)) (vx, gen uint16, _ string, d stage.Deps, stop func() error) {
	t.Helper()
	a := net.JoinHostPort(host, "0")
	in, err := udpin.Open(udpin.Config{Addrs: []string{a, a}, Sockets: 2, RcvBuf: 8 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	ports := map[uint16]bool{}
	var order []uint16
	for _, a := range in.Addrs() {
		if !ports[a.Port()] {
			ports[a.Port()] = true
			order = append(order, a.Port())
		}
	}
	if len(order) != 2 {
		t.Fatalf("intake ports %v", in.Addrs())
	}
	vx, gen = order[0], order[1]
	cfg := DefaultConfig()
	cfg.Common.NATSURL = url
	cfg.Common.HTTPAddr = ""
	cfg.Intake = in
	cfg.VXLANPort, cfg.GENEVEPort = int(vx), int(gen)
	if mod != nil {
		mod(&cfg)
	}
	d, _ = stage.TestDeps("decap")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg, d) }()
	var once bool
	var runErr error
	stop = func() error {
		if !once {
			once = true
			cancel()
			select {
			case runErr = <-errc:
			case <-time.After(60 * time.Second):
				runErr = fmt.Errorf("decap did not stop within 60s")
			}
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return vx, gen, url, d, stop
}

// waitFrames polls the stream until it holds n frames (60 s at most).
func waitFrames(t *testing.T, url string, n int) []published {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := fetchFrames(t, url)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSendToLiveDecap: `decap send` to a decap listening on 127.0.0.1
// reproduces, through real UDP sockets and JetStream, the frames decap
// --read gives for the same capture (VXLAN and GENEVE).
func TestSendToLiveDecap(t *testing.T) {
	for _, tc := range []struct {
		file string
		gen  bool
	}{
		{"aws-vpc-mirror-vxlan-ssh.pcap", false},
		{"geneve-ssh.pcap", true},
		{"geneve-gcp-l3-tcp.pcap", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := captures + tc.file
			var want []string
			if err := ReadCapture(path, func(f *framebatch.Frame) error {
				want = append(want, fmt.Sprintf("%d/%d/%x", f.VNI, f.Link, f.Data))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			vx, gen, url, d, stop := startListening(t, nil)
			port := vx
			if tc.gen {
				port = gen
			}
			res, err := send.Send(context.Background(), send.Config{File: path, To: fmt.Sprintf("127.0.0.1:%d", port), VNI: -1, GENEVE: tc.gen, Speed: 50, Loop: 1}, slog.Default())
			if err != nil || res.Packets != int64(len(want)) {
				t.Fatalf("send: %+v %v", res, err)
			}
			got := waitFrames(t, url, len(want))
			if h := d.Health.Check(); len(h) != 0 {
				t.Errorf("healthz while publishing: %v", h)
			}
			if err := stop(); err != nil {
				t.Fatalf("decap: %v", err)
			}
			var have []string
			for _, g := range got {
				if g.Frame.OuterSrc.String() != "127.0.0.1" {
					t.Fatalf("outer source %v", g.Frame.OuterSrc)
				}
				have = append(have, fmt.Sprintf("%d/%d/%x", g.VNI, g.Frame.Link, g.Frame.Data))
			}
			sort.Strings(want)
			sort.Strings(have)
			if len(have) != len(want) {
				t.Fatalf("decap published %d frames, sent %d", len(have), len(want))
			}
			for i := range want {
				if want[i] != have[i] {
					t.Fatalf("frame differs:\nsent      %.120s\npublished %.120s", want[i], have[i])
				}
			}
		})
	}
}

// TestSendToLiveDecapIPv6: the same round trip over ::1.
func TestSendToLiveDecapIPv6(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	path := captures + "aws-vpc-mirror-vxlan-ssh.pcap"
	_, url := natstest.Run(t)
	vx, _, _, _, stop := startListeningAt(t, "::1", url, nil)
	res, err := send.Send(context.Background(), send.Config{File: path, To: fmt.Sprintf("[::1]:%d", vx), VNI: 42, Speed: 50, Loop: 1}, slog.Default())
	if err != nil || res.Packets != 100 {
		t.Fatalf("send: %+v %v", res, err)
	}
	got := waitFrames(t, url, 100)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 100 {
		t.Fatalf("%d frames", len(got))
	}
	for _, g := range got {
		if g.VNI != 42 || g.Frame.OuterSrc.String() != "::1" {
			t.Fatalf("frame %+v", g.Frame.Iface())
		}
	}
}

// TestLiveBadDatagrams: garbage, short datagrams, wrong flags and a 64 KiB
// datagram reach a live decap: counted or kept whole, and decap keeps
// working.
func TestLiveBadDatagrams(t *testing.T) {
	vx, _, url, d, stop := startListening(t, nil)
	conn := dialUDP(t, vx)
	big := append([]byte{0x08, 0, 0, 0, 0, 0, 7, 0}, bytes.Repeat([]byte{0xab}, 65507-8)...)
	for _, dg := range [][]byte{{}, {1}, {0x08, 0, 0}, {0, 0, 0, 0, 0, 0, 1, 0, 9, 9}, bytes.Repeat([]byte{0xff}, 100), big} {
		if _, err := conn.Write(dg); err != nil {
			t.Fatal(err)
		}
	}
	// 0xff... has the I flag: a garbage inner frame, kept. So is big.
	got := waitFrames(t, url, 2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d frames published, want 2", len(got))
	}
	sizes := []int{len(got[0].Frame.Data), len(got[1].Frame.Data)}
	sort.Ints(sizes)
	if sizes[0] != 92 || sizes[1] != 65507-8 {
		t.Fatalf("frame sizes %v", sizes)
	}
	reg := d.Metrics.(prometheus.Gatherer)
	for reason, want := range map[string]float64{"vxlan_short": 3, "vxlan_flags": 1} {
		if n := metric(t, reg, "tapline_decap_malformed_total", "reason", reason); n != want {
			t.Errorf("malformed %s = %v, want %v", reason, n, want)
		}
	}
	if n := metric(t, reg, "tapline_decap_reserved_bits_total"); n != 1 {
		t.Errorf("reserved bits %v, want 1 (the 0xff garbage)", n)
	}
}
