package reassemble

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tapline/tapline/reassemble/tlsdec"
)

// TestTLSTsharkOracle: a wss:// session written as a pcap and decrypted
// by tshark with the same key log (follow,tls,raw) gives the same
// plaintext, both directions, as tlsdec.
func TestTLSTsharkOracle(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark not installed (.ci/run installs it)")
	}
	cp := captureWSS(t, []int{200000, 5000, 70000}, websocket.CompressionContextTakeover)
	dir := t.TempDir()
	pcap := filepath.Join(dir, "wss.pcap")
	keylog := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(keylog, cp.keylog, 0o600); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Create(pcap)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriterNanos(fh)
	if err := w.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, f := range tlsFrames(t, cp.writes, [2][]byte{cp.c2s, cp.s2c}, nil) {
		if err := w.WritePacket(gopacketCI(f), f.Data); err != nil {
			t.Fatal(err)
		}
	}
	fh.Close()
	out, err := exec.Command("tshark", "-r", pcap, "-o", "tls.keylog_file:"+keylog, "-q", "-z", "follow,tls,raw,0").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	// follow,raw: one hex line per record's data, the server's indented.
	var want [2][]byte
	body := string(out)
	if i := strings.Index(body, "Node 1:"); i >= 0 {
		body = body[i:]
		if j := strings.Index(body, "\n"); j >= 0 {
			body = body[j+1:]
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "====") || strings.TrimSpace(line) == "" {
			continue
		}
		d := 0
		if strings.HasPrefix(line, "\t") {
			d = 1
		}
		b, err := hex.DecodeString(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("tshark line %q: %v", line, err)
		}
		want[d] = append(want[d], b...)
	}
	// tshark's node 0 is the first talker of its TLS stream; put the
	// server's (the larger push) second.
	if len(want[0]) > len(want[1]) {
		want[0], want[1] = want[1], want[0]
	}
	if len(want[1]) < 100000 {
		t.Fatalf("tshark decrypted only %d/%d bytes", len(want[0]), len(want[1]))
	}
	ks := tlsdec.NewKeyStore(10, 0)
	ks.AddLines(cp.keylog, time.Now())
	var got [2][]byte
	c := tlsdec.NewConn(ks, tlsdec.Limits{}, sinkFunc(func(d int, p []byte) { got[d] = append(got[d], p...) }))
	c.Data(0, cp.c2s, time.Now())
	c.Data(1, cp.s2c, time.Now())
	c.Close(time.Now())
	for d := 0; d < 2; d++ {
		if !bytes.Equal(got[d], want[d]) {
			t.Errorf("dir %d: tlsdec %d bytes, tshark %d bytes, equal %v", d, len(got[d]), len(want[d]), bytes.Equal(got[d], want[d]))
		}
	}
	t.Logf("tshark and tlsdec agree: %d + %d plaintext bytes", len(got[0]), len(got[1]))
}
