package decap

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/capture"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// published is one frame read back from TAPLINE_FRAMES.
type published struct {
	Subject string
	VNI     uint32
	Shard   int
	Frame   framebatch.Frame
}

// runRead runs decap --read path into a fresh JetStream server and returns
// the frames it published and the metrics registry.
func runRead(t *testing.T, path string, mod func(*Config)) ([]published, *prometheus.Registry, string) {
	t.Helper()
	_, url := natstest.Run(t)
	cfg := DefaultConfig()
	cfg.Common.NATSURL = url
	cfg.Common.HTTPAddr = ""
	cfg.Read = path
	if mod != nil {
		mod(&cfg)
	}
	d, reg := stage.TestDeps("decap")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Run(ctx, cfg, d); err != nil {
		t.Fatalf("decap --read %s: %v", path, err)
	}
	return fetchFrames(t, url), reg, url
}

// fetchFrames reads every batch stored in TAPLINE_FRAMES.
func fetchFrames(t *testing.T, url string) []published {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var st jetstream.Stream
	for {
		if st, err = js.Stream(ctx, proto.FramesStream); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []published
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		vni, shard, err := proto.ParseSubject(m.Subject)
		if err != nil {
			t.Fatal(err)
		}
		r := framebatch.NewReader(m.Data)
		for {
			var f framebatch.Frame
			if err := r.Next(&f); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("batch %d: %v", seq, err)
			}
			if f.VNI != vni {
				t.Fatalf("frame VNI %d on subject %s", f.VNI, m.Subject)
			}
			f.Data = append([]byte(nil), f.Data...)
			out = append(out, published{Subject: m.Subject, VNI: vni, Shard: shard, Frame: f})
		}
	}
	return out
}

// metric sums every series of a metric family.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	sum, err := stage.MetricSum(reg, name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// expectedFrame is an inner frame as tshark dissects it.
type expectedFrame struct {
	VNI    uint32
	TimeNs int64
	Data   []byte
}

type pdml struct {
	Packets []struct {
		Protos []struct {
			Name   string `xml:"name,attr"`
			Pos    int    `xml:"pos,attr"`
			Size   int    `xml:"size,attr"`
			Fields []struct {
				Name string `xml:"name,attr"`
				Show string `xml:"show,attr"`
			} `xml:"field"`
		} `xml:"proto"`
	} `xml:"packet"`
}

// tsharkInner derives the inner frames of an encapsulated capture with
// tshark: where the dissector puts the protocol after vxlan/geneve, up to
// the end of the outer UDP datagram, and the VNI it shows. Outer bytes and
// timestamps come from the file itself.
func tsharkInner(t *testing.T, path string) []expectedFrame {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		mirrorlab.Unavailable(t, "tshark not installed")
	}
	out, err := exec.Command("tshark", "-r", path, "-T", "pdml").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var doc pdml
	if err := xml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cr, err := capture.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var exp []expectedFrame
	for i, pk := range doc.Packets {
		var cp capture.Packet
		if err := cr.Next(&cp); err != nil {
			t.Fatalf("packet %d: %v", i+1, err)
		}
		enc, udp := -1, -1
		for j, p := range pk.Protos {
			if p.Name == "udp" && udp < 0 {
				udp = j
			}
			if (p.Name == "vxlan" || p.Name == "geneve") && enc < 0 {
				enc = j
			}
		}
		if enc < 0 || enc+1 >= len(pk.Protos) || udp < 0 {
			t.Fatalf("%s packet %d: tshark found no encapsulation", path, i+1)
		}
		var tsNs int64 = -1
		for _, p := range pk.Protos {
			if p.Name == "frame" {
				for _, fl := range p.Fields {
					if fl.Name == "frame.time_epoch" {
						tsNs = epochNs(t, fl.Show)
					}
				}
			}
		}
		if tsNs != cp.TimeNs {
			t.Fatalf("%s packet %d: tshark time %d, capture reader %d", path, i+1, tsNs, cp.TimeNs)
		}
		var vni uint64
		for _, fl := range pk.Protos[enc].Fields {
			if fl.Name == "vxlan.vni" || fl.Name == "geneve.vni" {
				vni, _ = strconv.ParseUint(fl.Show, 0, 32)
			}
		}
		upos := pk.Protos[udp].Pos
		end := upos + (int(cp.Data[upos+4])<<8 | int(cp.Data[upos+5]))
		if end > len(cp.Data) {
			end = len(cp.Data)
		}
		start := pk.Protos[enc+1].Pos
		exp = append(exp, expectedFrame{VNI: uint32(vni), TimeNs: cp.TimeNs, Data: bytes.Clone(cp.Data[start:end])})
	}
	return exp
}

// tcpStream is one line of expected/*.tcpstreams.txt.
type tcpStream struct {
	A, B         string
	AB, BA       int
	ABSum, BASum string
}

func readTCPStreams(t *testing.T, path string) []tcpStream {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []tcpStream
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// tcp.stream 0: A -> B  A->B 1601 B sha1=x  B->A 1785 B sha1=y ...
		if len(f) < 13 || f[0] != "tcp.stream" {
			continue
		}
		ab, _ := strconv.Atoi(f[6])
		ba, _ := strconv.Atoi(f[10])
		out = append(out, tcpStream{A: f[2], B: f[4], AB: ab, BA: ba,
			ABSum: strings.TrimPrefix(f[8], "sha1="), BASum: strings.TrimPrefix(f[12], "sha1=")})
	}
	if len(out) == 0 {
		t.Fatalf("%s: no streams", path)
	}
	return out
}

func dialUDP(t *testing.T, port uint16) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// epochNs parses tshark's "seconds.fraction" epoch time into ns exactly.
func epochNs(t *testing.T, s string) int64 {
	t.Helper()
	sec, frac, _ := strings.Cut(s, ".")
	frac = (frac + "000000000")[:9]
	a, err1 := strconv.ParseInt(sec, 10, 64)
	b, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("tshark time %q", s)
	}
	return a*1e9 + b
}
