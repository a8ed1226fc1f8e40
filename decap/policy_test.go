package decap

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/decode"
	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/decap/vxlan"
	"github.com/tapline/tapline/proto/mirrorlab"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// innerFrame is a minimal Ethernet/IPv4/UDP frame (headers only).
var innerFrame = []byte{
	0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
	0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
	0x30, 0x39, 0x00, 0x50, 0, 8, 0, 0,
}

func vxlanDatagram(vni uint32) []byte {
	return append(vxlan.Append(nil, vni), innerFrame...)
}

// TestDefaultSourcePolicy: with neither --allow-src nor
// --allow-any-source the network intake takes private and loopback outer
// sources only; a public-range source is dropped and counted as "src".
// --allow-src replaces the default, --allow-any-source opens it.
func TestDefaultSourcePolicy(t *testing.T) {
	public := netip.MustParseAddr("198.51.100.7")
	private := []string{"10.1.2.3", "172.31.0.9", "192.168.1.1", "100.64.0.1", "127.0.0.1", "::1", "fd00::1"}
	for _, tc := range []struct {
		name       string
		mod        func(*Config)
		wantPublic bool
		wantPriv   bool
	}{
		{"default", func(*Config) {}, false, true},
		{"allow-src", func(c *Config) { c.AllowSrc = []string{"198.51.100.0/24"} }, true, false},
		{"allow-any-source", func(c *Config) { c.AllowAnySource = true }, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			e := &engine{cfg: cfg, stats: decode.NewStats()}
			dec := decode.New(e.decodeConfig(), e.stats)
			var p decode.Packet
			dg := vxlanDatagram(7)
			if got := dec.Datagram(&p, dg, public, 4789, 1); got != tc.wantPublic {
				t.Errorf("public source %v accepted=%v, want %v", public, got, tc.wantPublic)
			}
			for _, s := range private {
				if got := dec.Datagram(&p, dg, netip.MustParseAddr(s), 4789, 1); got != tc.wantPriv {
					t.Errorf("source %s accepted=%v, want %v", s, got, tc.wantPriv)
				}
			}
			want := uint64(0)
			if !tc.wantPublic {
				want++
			}
			if !tc.wantPriv {
				want += uint64(len(private))
			}
			if n := e.stats.Totals().Filtered["src"]; n != want {
				t.Errorf("filtered src = %d, want %d", n, want)
			}
		})
	}
}

// TestVNIFloodBounded is the flood: 3,000 VXLAN datagrams with
// distinct random VNIs. Only the first --max-vnis VNIs are published; the
// rest are counted (vni="other", reason vni_cap), reported in the drops
// event, and /metrics stays small.
func TestVNIFloodBounded(t *testing.T) {
	const n, max = 3000, 64
	vx, _, url, d, stop := startListening(t, func(c *Config) { c.EventsInterval = 50 * time.Millisecond })
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("tapline.events.decap.drops")
	if err != nil {
		t.Fatal(err)
	}
	conn := dialUDP(t, vx)
	seen := map[uint32]bool{}
	for len(seen) < n {
		v := rand.Uint32N(1 << 24)
		if seen[v] {
			continue
		}
		seen[v] = true
		if _, err := conn.Write(vxlanDatagram(v)); err != nil {
			t.Fatal(err)
		}
		if len(seen)%256 == 0 {
			time.Sleep(time.Millisecond) // loopback: let the reader keep up
		}
	}
	got := waitFrames(t, url, max)
	reg := d.Metrics.(prometheus.Gatherer)
	deadline := time.Now().Add(30 * time.Second)
	for metric(t, reg, "tapline_decap_filtered_total", "reason", "vni_cap") < n-max && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(got) != max {
		t.Errorf("%d frames published, want %d (one per admitted VNI)", len(got), max)
	}
	if c := metric(t, reg, "tapline_decap_filtered_total", "reason", "vni_cap", "vni", "other"); c != n-max {
		t.Errorf("vni_cap drops %v, want %d", c, n-max)
	}
	if p := metric(t, reg, "tapline_decap_packets_total"); p != max {
		t.Errorf("packets %v, want %d", p, max)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series, vnis := 0, map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			series++
			for _, l := range m.GetLabel() {
				if l.GetName() == "vni" && l.GetValue() != "" && l.GetValue() != "other" {
					vnis[l.GetValue()] = true
				}
			}
		}
	}
	if len(vnis) > max {
		t.Errorf("%d VNIs have their own metric series, want at most %d", len(vnis), max)
	}
	// 5 per-VNI counters for each of at most max VNIs, plus the fixed
	// series of every stage (a few hundred at most).
	if limit := 5*max + 500; series > limit {
		t.Errorf("/metrics has %d series, want at most %d", series, limit)
	}
	var last DropsEvent
	for {
		m, err := sub.NextMsg(time.Second)
		if err != nil {
			break
		}
		if err := json.Unmarshal(m.Data, &last); err != nil {
			t.Fatal(err)
		}
	}
	if last.Filtered["vni_cap"] != n-max || last.TrackedVNIs != max || last.MaxVNIs != max {
		t.Errorf("last drops event %+v, want filtered vni_cap %d, tracked %d of %d", last, n-max, max, max)
	}
}

// TestPublicSourceRefusedKernelLab is the injection: spoofed VXLAN
// from a host with a public-range address (TEST-NET-2 198.51.100.0/24 on a
// veth in namespaces this test creates) reaches decap's socket, and is
// dropped and counted by default; with --allow-src naming that range the
// same datagrams are published (so the test can tell).
func TestPublicSourceRefusedKernelLab(t *testing.T) {
	if err := mirrorlab.Available(); err != nil {
		t.Fatalf("kernel lab unavailable: %v", err)
	}
	tgt, atk := injectLab(t)
	_, url := natstest.Run(t)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want int
	}{
		{"default", func(*Config) {}, 0},
		{"allow-src", func(c *Config) { c.AllowSrc = []string{"198.51.100.0/24"} }, 24},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in *udpin.Intake
			if err := mirrorlab.Do(tgt, func() (err error) {
				in, err = udpin.Open(udpin.Config{Addrs: []string{"198.51.100.2:0"}, Sockets: 1, RcvBuf: 4 << 20}, nil)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			port := in.Addrs()[0].Port()
			cfg := DefaultConfig()
			cfg.Common.NATSURL = url
			cfg.Common.HTTPAddr = ""
			cfg.Intake = in
			cfg.VXLANPort, cfg.GENEVEPort = int(port), 0
			tc.mod(&cfg)
			d, reg := stage.TestDeps("decap")
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- Run(ctx, cfg, d) }()
			before := len(fetchFrames(t, url))
			if err := mirrorlab.Do(atk, func() error {
				c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("198.51.100.1")}, &net.UDPAddr{IP: net.ParseIP("198.51.100.2"), Port: int(port)})
				if err != nil {
					return err
				}
				defer c.Close()
				for i := range 24 {
					if _, err := c.Write(vxlanDatagram(uint32(100 + i%2))); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) && metric(t, reg, "tapline_decap_udp_datagrams_total") < 24 {
				time.Sleep(20 * time.Millisecond)
			}
			if tc.want > 0 {
				waitFrames(t, url, before+tc.want)
			}
			cancel()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if got := len(fetchFrames(t, url)) - before; got != tc.want {
				t.Errorf("%d frames from 198.51.100.1 published, want %d", got, tc.want)
			}
			if got := metric(t, reg, "tapline_decap_filtered_total", "reason", "src"); got != float64(24-tc.want) {
				t.Errorf("filtered src = %v, want %d", got, 24-tc.want)
			}
		})
	}
}

// injectLab creates two namespaces joined by a veth pair: the target
// (198.51.100.2/24) and the sender (198.51.100.1/24).
func injectLab(t *testing.T) (tgt, atk string) {
	t.Helper()
	id := fmt.Sprintf("%s%d-inj%d", mirrorlab.NamePrefix, os.Getpid(), rand.IntN(1e6))
	tgt, atk = id+"t", id+"a"
	vt, va := fmt.Sprintf("it%d", rand.IntN(1e6)), fmt.Sprintf("ia%d", rand.IntN(1e6))
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", tgt)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", tgt).Run() })
	run("netns", "add", atk)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", atk).Run() })
	run("link", "add", vt, "netns", tgt, "type", "veth", "peer", "name", va, "netns", atk)
	run("-n", tgt, "addr", "add", "198.51.100.2/24", "dev", vt)
	run("-n", atk, "addr", "add", "198.51.100.1/24", "dev", va)
	for _, ns := range []struct{ ns, dev string }{{tgt, vt}, {atk, va}} {
		run("-n", ns.ns, "link", "set", ns.dev, "up")
		run("-n", ns.ns, "link", "set", "lo", "up")
	}
	return tgt, atk
}
