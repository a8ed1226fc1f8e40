package send

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tapline/tapline/decap/capture"
	"github.com/tapline/tapline/decap/decode"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

const captures = "../../testdata/captures/"

// readFrames is what decap reads from a capture file.
func readFrames(t *testing.T, path string) []framebatch.Frame {
	t.Helper()
	var out []framebatch.Frame
	dec := decode.New(decode.Config{}, decode.NewStats())
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	f, err := capture.NewReader(file)
	if err != nil {
		t.Fatal(err)
	}
	var cp capture.Packet
	var p decode.Packet
	for f.Next(&cp) == nil {
		if dec.Frame(&p, cp.LinkType, cp.Data, cp.TimeNs) {
			fr := p.Frame
			fr.Data = bytes.Clone(fr.Data)
			out = append(out, fr)
		}
	}
	return out
}

// TestSendLoopback sends captures to a UDP socket on 127.0.0.1 and decodes
// what arrives: the same inner frames, the chosen VNI, the source port of
// the flow hash.
func TestSendLoopback(t *testing.T) {
	for _, tc := range []struct {
		file string
		gen  bool
		vni  int
	}{
		{"aws-vpc-mirror-vxlan-ssh.pcap", false, -1},
		{"ws-broker-json.pcap", false, 77},
		{"geneve-gcp-l3-tcp.pcap", true, 5},
		{"vxlan-encapsulated-http.pcap", true, -1},
	} {
		t.Run(tc.file, func(t *testing.T) {
			want := readFrames(t, captures+tc.file)
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			_ = pc.SetReadBuffer(8 << 20)
			port := pc.LocalAddr().(*net.UDPAddr).Port
			res, err := Send(context.Background(), Config{File: captures + tc.file, To: pc.LocalAddr().String(), VNI: tc.vni, GENEVE: tc.gen, Top: true, Loop: 1}, slog.Default())
			if err != nil || res.Packets != int64(len(want)) {
				t.Fatalf("sent %+v err %v, want %d packets", res, err, len(want))
			}
			dcfg := decode.Config{VXLANPort: uint16(port), GENEVEPort: 1}
			if tc.gen {
				dcfg = decode.Config{VXLANPort: 1, GENEVEPort: uint16(port)}
			}
			dec := decode.New(dcfg, decode.NewStats())
			buf := make([]byte, 70000)
			ports := map[uint64]uint16{}
			matched := 0
			defer func() {
				if matched == 0 && len(ports) > 0 {
					t.Errorf("no datagram came from its flow's source port")
				}
			}()
			for i, w := range want {
				_ = pc.SetReadDeadline(time.Now().Add(60 * time.Second))
				n, src, err := pc.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("datagram %d: %v", i, err)
				}
				var p decode.Packet
				if !dec.Datagram(&p, buf[:n], src.Addr(), uint16(port), 0) {
					t.Fatalf("datagram %d not decodable", i)
				}
				wantVNI := w.VNI
				if tc.vni >= 0 {
					wantVNI = uint32(tc.vni)
				}
				got := p.Frame.Data
				if !tc.gen && w.Link == flow.LinkRaw {
					got = got[14:] // the Ethernet header send adds to raw IP for VXLAN
				}
				if !bytes.Equal(got, w.Data) || p.Frame.VNI != wantVNI {
					t.Fatalf("datagram %d: VNI %d (want %d), frame differs: %v", i, p.Frame.VNI, wantVNI, !bytes.Equal(got, w.Data))
				}
				// One flow, one source port (SourcePort(hash) unless that
				// port was taken on this machine).
				if k, err := flow.Parse(w.Link, w.Data); err == nil {
					h := k.Hash()
					if p, ok := ports[h]; ok && p != src.Port() {
						t.Fatalf("datagram %d: flow moved from source port %d to %d", i, p, src.Port())
					}
					ports[h] = src.Port()
					if src.Port() == SourcePort(h) {
						matched++
					}
				}
				if src.Addr() != netip.MustParseAddr("127.0.0.1") {
					t.Fatalf("source %v", src)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{}, {File: "x"}, {File: "x", To: "h", Speed: 0}, {File: "x", To: "h", Speed: 1, VNI: 1 << 24}} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := resolve("127.0.0.1", true); err != nil {
		t.Fatal(err)
	}
	if ap, _ := resolve("127.0.0.1", false); ap.Port() != 4789 {
		t.Fatal(ap)
	}
}

// TestSendIPv6 sends to ::1 (skipped where IPv6 loopback is missing).
func TestSendIPv6(t *testing.T) {
	pc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer pc.Close()
	res, err := Send(context.Background(), Config{File: captures + "vxlan-icmp-arp.pcap", To: pc.LocalAddr().String(), VNI: 9, Top: true, Loop: 2}, slog.Default())
	if err != nil || res.Packets != 20 {
		t.Fatalf("%+v %v", res, err)
	}
	buf := make([]byte, 2000)
	for i := 0; i < 20; i++ {
		_ = pc.SetReadDeadline(time.Now().Add(60 * time.Second))
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n < 8 || buf[0] != 0x08 || buf[6] != 9 || !src.Addr().Is6() {
			t.Fatalf("datagram %d from %v: %x", i, src, buf[:8])
		}
	}
}
