package decap

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tapline/tapline/decap/internal/testutil"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// encapCaptures are the VXLAN/GENEVE captures of testdata/captures.
var encapCaptures = []string{
	"aws-vpc-mirror-vxlan-ssh.pcap",
	"vxlan-encapsulated-http.pcap",
	"vxlan-nonzero-reserved-http.pcap",
	"vxlan-outer-vlan-tls.pcap",
	"vxlan-icmp-arp.pcap",
	"geneve-many-options-http.pcap",
	"geneve-ssh.pcap",
	"geneve-gcp-l3-tcp.pcap",
}

// TestEveryEncapCapture is the acceptance test: every VXLAN/GENEVE capture
// goes through decap --read into JetStream and the published inner frames
// equal, byte for byte, the inner frames tshark dissects, with tshark's
// VNIs and the file's timestamps; both directions of every TCP connection
// share a shard; the TCP streams reassembled from the published frames have
// the byte counts and SHA-1s of expected/*.tcpstreams.txt.
func TestEveryEncapCapture(t *testing.T) {
	// Every encapsulated capture in the directory must be listed above.
	all, _ := filepath.Glob(captures + "*.pcap*")
	listed := map[string]bool{}
	for _, c := range encapCaptures {
		listed[c] = true
	}
	for _, p := range all {
		b := filepath.Base(p)
		if (strings.HasPrefix(b, "vxlan") || strings.HasPrefix(b, "geneve") || strings.Contains(b, "vxlan")) && !listed[b] {
			t.Errorf("capture %s is not covered by this test", b)
		}
	}
	for _, name := range encapCaptures {
		t.Run(name, func(t *testing.T) {
			path := captures + name
			exp := tsharkInner(t, path)
			got, reg, _ := runRead(t, path, nil)
			compareFrames(t, exp, got)
			checkShards(t, got, 16)
			if m := metric(t, reg, "tapline_decap_malformed_total"); m != 0 {
				t.Errorf("malformed %v", m)
			}
			if m := metric(t, reg, "tapline_decap_packets_total"); int(m) != len(exp) {
				t.Errorf("packets metric %v, want %d", m, len(exp))
			}
			if _, err := os.Stat(captures + "expected/" + name + ".tcpstreams.txt"); err == nil {
				checkStreams(t, got, readTCPStreams(t, captures+"expected/"+name+".tcpstreams.txt"))
			}
		})
	}
}

func compareFrames(t *testing.T, exp []expectedFrame, got []published) {
	t.Helper()
	if len(got) != len(exp) {
		t.Fatalf("published %d frames, tshark shows %d", len(got), len(exp))
	}
	key := func(ts int64, vni uint32, d []byte) string { return fmt.Sprintf("%020d/%d/%x", ts, vni, d) }
	var a, b []string
	for _, e := range exp {
		a = append(a, key(e.TimeNs, e.VNI, e.Data))
	}
	for _, g := range got {
		b = append(b, key(g.Frame.TimeNs, g.VNI, g.Frame.Data))
	}
	sort.Strings(a)
	sort.Strings(b)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("frame %d differs:\ntshark  %.200s\ndecap   %.200s", i, a[i], b[i])
		}
	}
}

// checkShards: every IP frame is on the shard of its symmetric flow hash,
// so both directions of a connection share one.
func checkShards(t *testing.T, got []published, shards int) {
	t.Helper()
	for _, g := range got {
		k, err := flow.Parse(g.Frame.Link, g.Frame.Data)
		want := 0
		if err == nil {
			want = flow.Shard(k.Hash(), shards)
		}
		if g.Shard != want {
			t.Fatalf("frame %v on shard %d, want %d", k, g.Shard, want)
		}
	}
}

func checkStreams(t *testing.T, got []published, exp []tcpStream) {
	t.Helper()
	st := testutil.NewStreams()
	for i := range got {
		st.Add(&got[i].Frame)
	}
	for _, s := range exp {
		ab := st.Bytes(s.A + " -> " + s.B)
		ba := st.Bytes(s.B + " -> " + s.A)
		if len(ab) != s.AB || len(ba) != s.BA {
			t.Errorf("%s -> %s: %d/%d bytes, tshark %d/%d", s.A, s.B, len(ab), len(ba), s.AB, s.BA)
			continue
		}
		if s.AB > 0 && testutil.SHA1Prefix(ab) != s.ABSum || s.BA > 0 && testutil.SHA1Prefix(ba) != s.BASum {
			t.Errorf("%s -> %s: SHA-1 differs", s.A, s.B)
		}
	}
}

func TestAWSCaptureSSH(t *testing.T) {
	got, _, _ := runRead(t, captures+"aws-vpc-mirror-vxlan-ssh.pcap", nil)
	st := testutil.NewStreams()
	shards := map[string]map[int]bool{}
	for i := range got {
		g := &got[i]
		if g.VNI != 5569041 || g.Frame.Encap != framebatch.EncapVXLAN || g.Frame.OuterSrc.String() != "172.31.0.238" {
			t.Fatalf("frame %+v", g.Frame.Iface())
		}
		st.Add(&g.Frame)
		k, err := flow.Parse(g.Frame.Link, g.Frame.Data)
		if err == nil && k.Proto == flow.ProtoTCP {
			port := k.SrcPort
			if port == 22 {
				port = k.DstPort
			}
			n := fmt.Sprint(port)
			if shards[n] == nil {
				shards[n] = map[int]bool{}
			}
			shards[n][g.Shard] = true
		}
	}
	if len(shards) != 4 {
		t.Fatalf("%d SSH connections, want 4", len(shards))
	}
	for p, s := range shards {
		if len(s) != 1 {
			t.Errorf("connection %s spread over shards %v", p, s)
		}
	}
	for p, want := range map[string]int{"37180": 1785, "37182": 1785, "37184": 1785, "37186": 1701} {
		c2s := st.Bytes("18.196.145.224:" + p + " -> 172.31.0.238:22")
		s2c := st.Bytes("172.31.0.238:22 -> 18.196.145.224:" + p)
		if len(c2s) != 1601 || len(s2c) != want {
			t.Errorf("connection %s: c2s %d (want 1601) s2c %d (want %d)", p, len(c2s), len(s2c), want)
		}
	}
}

func TestGeneveSSHSplitAcrossVNIs(t *testing.T) {
	got, _, _ := runRead(t, captures+"geneve-ssh.pcap", nil)
	vnis := map[uint32]string{}
	shard := -1
	for _, g := range got {
		k, err := flow.Parse(g.Frame.Link, g.Frame.Data)
		if err != nil || k.Proto != flow.ProtoTCP {
			continue
		}
		if g.Frame.Encap != framebatch.EncapGENEVE {
			t.Fatalf("encap %v", g.Frame.Encap)
		}
		vnis[g.VNI] = fmt.Sprintf("%v:%d", k.Src, k.SrcPort)
		if shard >= 0 && g.Shard != shard {
			t.Fatalf("connection on shards %d and %d", shard, g.Shard)
		}
		shard = g.Shard
	}
	if vnis[10] != "30.0.0.1:22" || vnis[11] != "30.0.0.2:51225" || len(vnis) != 2 {
		t.Fatalf("VNIs %v", vnis)
	}
}

func TestGeneveGCPL3Inner(t *testing.T) {
	got, _, _ := runRead(t, captures+"geneve-gcp-l3-tcp.pcap", nil)
	if len(got) != 1 {
		t.Fatalf("%d frames", len(got))
	}
	f := got[0].Frame
	if f.Link != flow.LinkRaw || f.Encap != framebatch.EncapGENEVE || f.VNI != 0 || len(f.Data) != 40 || f.Data[0] != 0x45 || f.OrigLen != 40 {
		t.Fatalf("frame %+v len %d orig %d", f.Iface(), len(f.Data), f.OrigLen)
	}
}

func TestReservedBitsCounted(t *testing.T) {
	_, reg, _ := runRead(t, captures+"vxlan-nonzero-reserved-http.pcap", nil)
	if n := metric(t, reg, "tapline_decap_reserved_bits_total", "vni", "11", "encap", "vxlan"); n != 10 {
		t.Fatalf("reserved bits counted %v, want 10", n)
	}
}

func TestICMPARPNoTCP(t *testing.T) {
	got, reg, _ := runRead(t, captures+"vxlan-icmp-arp.pcap", nil)
	arp := 0
	for _, g := range got {
		k, err := flow.Parse(g.Frame.Link, g.Frame.Data)
		if err == nil && k.Proto == flow.ProtoTCP {
			t.Fatal("TCP frame in an ICMP/ARP capture")
		}
		if err != nil {
			arp++
			if g.Shard != 0 {
				t.Fatalf("non-IP frame on shard %d", g.Shard)
			}
		}
	}
	if len(got) != 10 || arp != 2 {
		t.Fatalf("%d frames, %d non-IP", len(got), arp)
	}
	if metric(t, reg, "tapline_decap_malformed_total")+metric(t, reg, "tapline_decap_inner_malformed_total") != 0 {
		t.Fatal("errors counted")
	}
}

// TestPlainCapture: a capture without encapsulation is taken as already
// decapsulated: encapsulation none, VNI 0, frames unchanged.
func TestPlainCapture(t *testing.T) {
	path := captures + "ws-broker-json.pcap"
	got, _, _ := runRead(t, path, nil)
	var want [][]byte
	if err := ReadCapture(path, func(f *framebatch.Frame) error {
		want = append(want, bytes.Clone(f.Data))
		if f.Encap != framebatch.EncapNone || f.VNI != 0 || f.OuterSrc.IsValid() {
			t.Fatalf("plain frame %+v", f.Iface())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(got) != 22 {
		t.Fatalf("published %d, read %d, want 22", len(got), len(want))
	}
	checkShards(t, got, 16)
}

// TestTruncatedCounted: in a plain capture whose packets hold fewer bytes
// than their IP total length, decap counts each (as many as tshark finds)
// and publishes it whole with the original length from the IP header.
func TestTruncatedCounted(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		mirrorlab.Unavailable(t, "tshark not installed")
	}
	path := captures + "tcp-gaps-truncated-http.pcap"
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.cap_len", "-e", "ip.len").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]int{} // cap_len -> original length, for truncated frames
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var capLen, ipLen int
		if _, err := fmt.Sscanf(line, "%d\t%d", &capLen, &ipLen); err == nil && ipLen+14 > capLen {
			want[capLen] = ipLen + 14
			n++
		}
	}
	if n == 0 {
		t.Fatal("tshark finds no truncated packet")
	}
	got, reg, _ := runRead(t, path, nil)
	if m := metric(t, reg, "tapline_decap_truncated_total"); int(m) != n {
		t.Fatalf("truncated counted %v, tshark finds %d", m, n)
	}
	seen := 0
	for _, g := range got {
		if g.Frame.OrigLen > len(g.Frame.Data) {
			seen++
			if want[len(g.Frame.Data)] != g.Frame.OrigLen {
				t.Fatalf("frame of %d bytes: original length %d, want %d", len(g.Frame.Data), g.Frame.OrigLen, want[len(g.Frame.Data)])
			}
		}
	}
	if seen != n {
		t.Fatalf("%d published frames carry an original length, want %d", seen, n)
	}
}

// TestReadTaplineBatches: frame batches saved from TAPLINE_FRAMES (several
// pcapng sections) read back with their VNI, encapsulation, outer source,
// timestamps and bytes.
func TestReadTaplineBatches(t *testing.T) {
	var want []framebatch.Frame
	if err := ReadCapture(captures+"aws-vpc-mirror-vxlan-ssh.pcap", func(f *framebatch.Frame) error {
		c := *f
		c.Data = bytes.Clone(f.Data)
		want = append(want, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var file []byte
	for i := 0; i < len(want); i += 30 { // several sections
		var w framebatch.Writer
		for j := i; j < min(i+30, len(want)); j++ {
			w.Add(&want[j])
		}
		file = append(file, w.Bytes()...)
	}
	path := filepath.Join(t.TempDir(), "batches.pcapng")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	got, _, _ := runRead(t, path, nil)
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	key := func(f *framebatch.Frame) string {
		return fmt.Sprintf("%d/%v/%x", f.TimeNs, f.Iface(), f.Data)
	}
	var a, b []string
	for i := range want {
		a = append(a, key(&want[i]))
		b = append(b, key(&got[i].Frame))
	}
	sort.Strings(a)
	sort.Strings(b)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("frame differs:\nwant %.150s\ngot  %.150s", a[i], b[i])
		}
	}
}
