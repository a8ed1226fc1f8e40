package reassemble

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tapline/tapline/proto"
)

const capturesDir = "../testdata/captures"

// tcpStream is one line of expected/*.tcpstreams.txt (tshark follow).
type tcpStream struct {
	a, b         string
	ab, ba       int64
	abSHA, baSHA string
}

var streamLine = regexp.MustCompile(`^tcp\.stream \d+: (\S+) -> (\S+)\s+A->B (\d+) B sha1=([0-9a-f]+)\s+B->A (\d+) B sha1=([0-9a-f]+)`)

func readStreams(t *testing.T, path string) []tcpStream {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tcpStream
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := streamLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ab, _ := strconv.ParseInt(m[3], 10, 64)
		ba, _ := strconv.ParseInt(m[5], 10, 64)
		out = append(out, tcpStream{a: m[1], b: m[2], ab: ab, abSHA: m[4], ba: ba, baSHA: m[6]})
	}
	return out
}

func sha12(b []byte) string {
	s := sha1.Sum(b)
	return hex.EncodeToString(s[:])[:12]
}

// TestCapturesTCP runs every capture with TCP expectations through decap's
// capture reader, JetStream and the engine, and compares the reassembled
// streams with tshark's.
func TestCapturesTCP(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(capturesDir, "expected", "*.tcpstreams.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no expectations in %s: %v", capturesDir, err)
	}
	for _, exp := range files {
		name := strings.TrimSuffix(filepath.Base(exp), ".tcpstreams.txt")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := readStreams(t, exp)
			_, url := natstestRun(t)
			_, js := connect(t, url)
			col := collect(t, js)
			cfg := testConfig(url, 4, "test-"+name)
			// The raw byte streams, compared with tshark's: TLS connections
			// are not decrypted here (no key log), so not held back either.
			cfg.TLS = false
			startEngine(t, cfg)
			publishCapture(t, js, filepath.Join(capturesDir, name), 4, 8)
			var wantConns int
			for _, w := range want {
				if w.ab+w.ba > 0 {
					wantConns++
				}
			}
			// geneve-ssh carries its two directions on two VNIs: two
			// connections by (VNI, 5-tuple), one stream for tshark.
			if name == "geneve-ssh.pcap" {
				wantConns = 2
			}
			waitFor(t, "close events", func() bool { return len(col.closed()) >= wantConns })
			gappy := name == "tcp-gaps-truncated-http.pcap"
			for _, w := range want {
				if w.ab+w.ba == 0 {
					continue
				}
				// Sum what the connections between the two endpoints
				// carried, per direction of the expectation.
				var got [2]int64
				var body [2][]byte
				var seen, missing, implied [2]int64
				var gaps, incomplete, n int
				for _, c := range col.closed() {
					if !(c.client == w.a && c.server == w.b) && !(c.client == w.b && c.server == w.a) {
						continue
					}
					n++
					ab, ba := proto.ClientToServer, proto.ServerToClient
					if c.client == w.b {
						ab, ba = ba, ab
					}
					for i, d := range []proto.Direction{ab, ba} {
						got[i] += c.bytes[d]
						body[i] = append(body[i], c.body[d]...)
						l := loss(c.closeEv, d)
						seen[i] += l.BytesSeen
						missing[i] += l.BytesMissing
						implied[i] += l.BytesImplied
					}
					gaps += len(c.gaps)
					incomplete += c.incomplete
					t.Logf("%s: close %s, %+v", c.id, c.closeEv.Reason, c.closeEv)
				}
				if n == 0 {
					t.Fatalf("no connection %s <-> %s among %d", w.a, w.b, len(col.closed()))
				}
				t.Logf("%s->%s %d/%d B, back %d/%d B, %d gaps, missing %v", w.a, w.b, got[0], w.ab, got[1], w.ba, gaps, missing)
				if gappy {
					if gaps == 0 || missing[0] == 0 || incomplete == 0 {
						t.Errorf("holes not reported: %d gaps, %v missing, %d incomplete", gaps, missing, incomplete)
					}
					if got[0]+missing[0] != implied[0] || got[0] != seen[0] {
						t.Errorf("published %d + missing %d != implied %d (seen %d)", got[0], missing[0], implied[0], seen[0])
					}
					continue
				}
				if got[0] != w.ab || got[1] != w.ba {
					t.Errorf("bytes %d/%d, want %d/%d", got[0], got[1], w.ab, w.ba)
				}
				if sha12(body[0]) != w.abSHA || sha12(body[1]) != w.baSHA {
					t.Errorf("stream digests differ from tshark's")
				}
				if gaps != 0 || incomplete != 0 {
					t.Errorf("%d gaps, %d incomplete messages in a complete capture", gaps, incomplete)
				}
				if seen != got || missing != [2]int64{} {
					t.Errorf("loss summary: seen %v missing %v", seen, missing)
				}
			}
			if len(col.errs) > 0 {
				t.Fatal(col.errs)
			}
		})
	}
}

func loss(c *proto.CloseEvent, d proto.Direction) proto.DirLoss {
	if d == proto.ClientToServer {
		return c.C2S
	}
	return c.S2C
}
