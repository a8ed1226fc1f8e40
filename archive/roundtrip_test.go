package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/seekable"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
)

// TestRoundTripLocal: every test capture, through decap's reader, into
// TAPLINE_FRAMES, archived in a local directory, queried back.
func TestRoundTripLocal(t *testing.T) {
	dir := t.TempDir()
	roundTrip(t, StoreConfig{Location: dir}, nil)
}

// TestRoundTripS3 is the same against a real S3 server (versitygw).
func TestRoundTripS3(t *testing.T) {
	srv, sc := s3Location(t)
	roundTrip(t, sc, func(args []string) []string {
		return append(args, "--s3-endpoint", srv.Endpoint(), "--s3-path-style", "--s3-region", "us-east-1")
	})
}

func roundTrip(t *testing.T, sc StoreConfig, cliArgs func([]string) []string) {
	paths, err := filepath.Glob(filepath.Join(capturesDir, "*.pcap*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no captures in %s", capturesDir)
	}
	_, url := natstest.Run(t)
	_, js := connect(t, url)
	var all []pub
	perCapture := map[string][]pub{}
	for _, p := range paths {
		fs := readCapture(t, p, 4)
		perCapture[filepath.Base(p)] = fs
		all = append(all, fs...)
	}
	publish(t, js, all, 7)
	cfg := testConfig(url, sc.Location)
	cfg.Store = sc
	stop, _ := runArchive(t, cfg)
	waitAcked(t, js, cfg.Consumer)
	stop()

	ctx := context.Background()
	st, err := store.Open(ctx, sc.Location, sc.S3)
	if err != nil {
		t.Fatal(err)
	}
	// Every chunk is a valid seekable zstd object whose index matches.
	chunks, errs := query.List(ctx, st, query.Filter{})
	if len(errs) > 0 || len(chunks) < 2 {
		t.Fatalf("list: %d chunks, errors %v", len(chunks), errs)
	}
	dec, _ := seekable.NewDecoder()
	var packets int64
	for _, c := range chunks {
		obj, err := st.Get(ctx, c.Index.Chunk)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := dec.DecodeAll(obj)
		if err != nil {
			t.Fatalf("%s: %v", c.Index.Chunk, err)
		}
		if int64(len(raw)) != c.Index.UncompressedSize || int64(len(obj)) != c.Index.CompressedSize {
			t.Fatalf("%s: sizes differ from the index", c.Index.Chunk)
		}
		if n := len(decodeAll(t, raw)); int64(n) != c.Index.Packets {
			t.Fatalf("%s: %d packets, index says %d", c.Index.Chunk, n, c.Index.Packets)
		}
		packets += c.Index.Packets
		if c == chunks[0] {
			zstdCLI(t, obj, raw, int(c.Index.Packets))
		}
	}
	if packets != int64(len(all)) {
		t.Fatalf("chunks hold %d packets, published %d", packets, len(all))
	}

	// The whole archive, through the library.
	out, res := queryStore(t, st, query.Filter{})
	if res.Duplicates != 0 {
		t.Errorf("%d duplicates without any crash", res.Duplicates)
	}
	sameFrames(t, decodeAll(t, out), frames(all))
	// The captures mix Ethernet and raw IP (GENEVE from a GWLB): classic
	// pcap cannot hold that and says so.
	if len(res.LinkTypes) > 1 {
		_, err := query.WriteFormat(ctx, st, chunks, query.Filter{}, io.Discard, query.FormatPcap, nil)
		if !errors.Is(err, query.ErrMixedLinkTypes) {
			t.Errorf("pcap of mixed link types: err = %v, want ErrMixedLinkTypes", err)
		}
	}

	// Per capture, through the command: the VNI and time range of the
	// capture, then exactly its packets (other captures of the same VNI
	// and overlapping time excluded by comparing against all of them).
	bin := archiveBinary(t)
	for name, fs := range perCapture {
		if len(fs) == 0 {
			continue
		}
		t.Run(name, func(t *testing.T) {
			vni := fs[0].f.VNI
			lo, hi := fs[0].f.TimeNs, fs[0].f.TimeNs
			for _, p := range fs {
				lo, hi = min(lo, p.f.TimeNs), max(hi, p.f.TimeNs)
			}
			var want []framebatch.Frame
			links := map[flow.LinkType]bool{}
			for _, p := range all {
				if p.f.VNI == vni && p.f.TimeNs >= lo && p.f.TimeNs <= hi {
					want = append(want, p.f)
					links[p.f.Link] = true
				}
			}
			args := []string{"query", "--store", sc.Location, "--vni", strconv.FormatUint(uint64(vni), 10),
				"--from", nsArg(lo), "--to", nsArg(hi + 1), "--progress", "never"}
			if cliArgs != nil {
				args = cliArgs(args)
			}
			cmd := exec.Command(bin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			got, err := cmd.Output()
			if err != nil {
				t.Fatalf("archive query: %v\n%s", err, stderr.String())
			}
			sameFrames(t, decodeAll(t, got), want)
			tsharkCount(t, got, len(want))
			if len(links) == 1 {
				tcpdumpCount(t, got, len(want))
				// Classic pcap (ns) for tools that read only pcap.
				cmd := exec.Command(bin, append(args, "--format", "pcap")...)
				cmd.Stderr = &stderr
				pc, err := cmd.Output()
				if err != nil {
					t.Fatalf("archive query --format pcap: %v\n%s", err, stderr.String())
				}
				samePcap(t, pc, want)
				tsharkCount(t, pc, len(want))
				tcpdumpCount(t, pc, len(want))
			}
		})
	}
}

// samePcap checks a classic pcap holds the frames of want (time in ns,
// lengths, bytes), in time order.
func samePcap(t *testing.T, b []byte, want []framebatch.Frame) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a pcap: %v", err)
	}
	if r.Resolution().ToDuration() != time.Nanosecond {
		t.Fatalf("pcap resolution %v, want ns", r.Resolution())
	}
	var got []framebatch.Frame
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, framebatch.Frame{TimeNs: ci.Timestamp.UnixNano(), OrigLen: ci.Length, Data: data, Link: flow.LinkType(r.LinkType())})
	}
	w := make([]framebatch.Frame, len(want))
	for i, f := range want {
		w[i] = framebatch.Frame{TimeNs: f.TimeNs, OrigLen: f.OrigLen, Data: f.Data, Link: f.Link}
	}
	sameFrames(t, got, w)
}

func nsArg(ns int64) string {
	s := strconv.FormatInt(ns, 10)
	for len(s) < 10 {
		s = "0" + s
	}
	return s[:len(s)-9] + "." + s[len(s)-9:]
}

// zstdCLI checks a plain `zstd -d` decompresses a chunk to the same
// multi-section pcapng, which tshark reads.
func zstdCLI(t *testing.T, obj, raw []byte, packets int) {
	t.Helper()
	bin, err := exec.LookPath("zstd")
	if err != nil {
		t.Log("zstd not installed: not checked")
		return
	}
	cmd := exec.Command(bin, "-dc")
	cmd.Stdin = bytes.NewReader(obj)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("zstd -dc: %v", err)
	}
	if !bytes.Equal(out, raw) {
		t.Fatal("zstd -dc output differs from the seekable reader's")
	}
	tsharkCount(t, out, packets)
}

// tsharkCount checks tshark reads the capture from a pipe and sees n
// packets.
func tsharkCount(t *testing.T, pcap []byte, n int) {
	t.Helper()
	bin, err := exec.LookPath("tshark")
	if err != nil {
		t.Log("tshark not installed: not checked")
		return
	}
	cmd := exec.Command(bin, "-r", "-", "-T", "fields", "-e", "frame.number")
	cmd.Stdin = bytes.NewReader(pcap)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r -: %v\n%s", err, stderr.String())
	}
	if got := len(strings.Fields(string(out))); got != n {
		t.Fatalf("tshark read %d packets, want %d", got, n)
	}
}

// tcpdumpCount checks tcpdump (libpcap) reads the capture and sees n
// packets.
func tcpdumpCount(t *testing.T, pcap []byte, n int) {
	t.Helper()
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Log("tcpdump not installed: not checked")
		return
	}
	f := filepath.Join(t.TempDir(), "q.pcapng")
	if err := os.WriteFile(f, pcap, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-nn", "-r", f)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, stderr.String())
	}
	lines := slices.DeleteFunc(strings.Split(string(out), "\n"), func(s string) bool { return s == "" })
	if len(lines) != n {
		t.Fatalf("tcpdump read %d packets, want %d\n%s", len(lines), n, stderr.String())
	}
}
