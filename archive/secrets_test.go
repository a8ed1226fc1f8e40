package archive

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/decap/keys"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/proto/tlstest"
)

// segment is one Write on one side of a recorded connection.
type segment struct {
	fromClient bool
	data       []byte
}

type recorder struct {
	mu   sync.Mutex
	segs []segment
}

// recConn records what is written on a connection. A write is recorded
// before it is sent, so the record is in causal order across directions.
type recConn struct {
	net.Conn
	r          *recorder
	fromClient bool
}

func (c recConn) Write(b []byte) (int, error) {
	c.r.mu.Lock()
	c.r.segs = append(c.r.segs, segment{c.fromClient, append([]byte(nil), b...)})
	c.r.mu.Unlock()
	return c.Conn.Write(b)
}

// tlsSession runs a real TLS connection between crypto/tls client and
// server over loopback, the client asking for uri over HTTP/1.1, and
// returns the frames a mirror would capture of it (client port port, from
// t0) and the client's key log.
func tlsSession(t *testing.T, cert tls.Certificate, version uint16, port uint16, t0 time.Time, uri string) ([]framebatch.Frame, []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rec := &recorder{}
	srvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		s := tls.Server(recConn{c, rec, false}, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: version, MaxVersion: version, SessionTicketsDisabled: true})
		defer s.Close()
		req, err := http.ReadRequest(bufio.NewReader(s))
		if err != nil {
			srvDone <- err
			return
		}
		body := "plaintext answer to " + req.URL.Path
		_, err = fmt.Fprintf(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		srvDone <- err
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var keyLog bytes.Buffer
	c := tls.Client(recConn{raw, rec, true}, &tls.Config{ServerName: "feed.example", InsecureSkipVerify: true, MinVersion: version, MaxVersion: version, KeyLogWriter: &keyLog})
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: feed.example\r\n\r\n", uri); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil || !strings.Contains(string(resp), "plaintext answer to "+uri) {
		t.Fatalf("TLS session: %v %q", err, resp)
	}
	c.Close()
	if err := <-srvDone; err != nil {
		t.Fatal(err)
	}
	if c.ConnectionState().Version != version {
		t.Fatalf("negotiated version %x, want %x", c.ConnectionState().Version, version)
	}
	return tcpFrames(rec.segs, port, t0), keyLog.Bytes()
}

// tcpFrames turns recorded writes into the Ethernet/IPv4/TCP frames of a
// connection 10.0.0.1:port -> 10.0.0.2:443: handshake, data segments of at
// most 1448 bytes, FINs.
func tcpFrames(segs []segment, port uint16, t0 time.Time) []framebatch.Frame {
	cli, srv := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	seq := map[bool]uint32{true: 1000, false: 5000}
	var out []framebatch.Frame
	add := func(fromClient bool, flags byte, payload []byte) {
		src, dst, sp, dp := cli, srv, port, uint16(443)
		if !fromClient {
			src, dst, sp, dp = srv, cli, 443, port
		}
		ack := seq[!fromClient]
		if flags&0x02 != 0 && fromClient {
			ack = 0
		}
		data := tcpPacket(src, dst, sp, dp, seq[fromClient], ack, flags, payload)
		seq[fromClient] += uint32(len(payload))
		if flags&0x03 != 0 { // SYN, FIN
			seq[fromClient]++
		}
		out = append(out, framebatch.Frame{TimeNs: t0.UnixNano() + int64(len(out))*int64(100*time.Microsecond), VNI: 7,
			Encap: framebatch.EncapVXLAN, Link: flow.LinkEthernet, OuterSrc: netip.MustParseAddr("172.31.0.238"), OrigLen: len(data), Data: data})
	}
	add(true, 0x02, nil)
	add(false, 0x12, nil)
	add(true, 0x10, nil)
	for _, s := range segs {
		for d := s.data; len(d) > 0; {
			n := min(len(d), 1448)
			add(s.fromClient, 0x18, d[:n])
			d = d[n:]
		}
	}
	add(true, 0x11, nil)
	add(false, 0x11, nil)
	add(true, 0x10, nil)
	return out
}

func tcpPacket(src, dst netip.Addr, sp, dp uint16, seq, ack uint32, flags byte, payload []byte) []byte {
	b := make([]byte, 14+20+20+len(payload))
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(40+len(payload)))
	ip[6] = 0x40
	ip[8] = 64
	ip[9] = flow.ProtoTCP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], csum(0, ip))
	tcp := b[34:]
	binary.BigEndian.PutUint16(tcp[0:2], sp)
	binary.BigEndian.PutUint16(tcp[2:4], dp)
	binary.BigEndian.PutUint32(tcp[4:8], seq)
	binary.BigEndian.PutUint32(tcp[8:12], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:16], 65535)
	copy(tcp[20:], payload)
	pseudo := append(append(append([]byte(nil), s4[:]...), d4[:]...), 0, flow.ProtoTCP, byte(len(tcp)>>8), byte(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:18], csum(sum(0, pseudo), tcp))
	return b
}

func sum(acc uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	return acc
}

func csum(acc uint32, b []byte) uint16 {
	acc = sum(acc, b)
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

func toPubs(fs []framebatch.Frame, shards int) []pub {
	out := make([]pub, len(fs))
	for i, f := range fs {
		k, _ := flow.Parse(f.Link, f.Data)
		out[i] = pub{f, flow.Shard(k.Hash(), shards)}
	}
	return out
}

func tsharkFields(t *testing.T, file, filter, field string) []string {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file, "-Y", filter, "-T", "fields", "-e", field).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	var vals []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "Running as user") {
			vals = append(vals, l)
		}
	}
	sort.Strings(vals)
	return vals
}

// dsbLines returns the key log lines of the Decryption Secrets Blocks of a
// little-endian pcapng file.
func dsbLines(t *testing.T, b []byte) []string {
	t.Helper()
	var lines []string
	for len(b) >= 12 {
		typ, n := binary.LittleEndian.Uint32(b), int(binary.LittleEndian.Uint32(b[4:]))
		if n < 12 || n > len(b) {
			t.Fatalf("bad pcapng block length %d", n)
		}
		if typ == 0x0A {
			if binary.LittleEndian.Uint32(b[8:]) != 0x544c534b {
				t.Fatalf("secrets type %x", binary.LittleEndian.Uint32(b[8:]))
			}
			l := int(binary.LittleEndian.Uint32(b[12:]))
			for _, s := range strings.SplitAfter(string(b[16:16+l]), "\n") {
				if s != "" {
					lines = append(lines, s)
				}
			}
		}
		if typ == 6 && len(lines) == 0 && bytes.Contains(b[:n], []byte{0x16, 0x03}) {
			// Packets before the secrets: tshark would not decrypt them.
			t.Fatal("a packet precedes the Decryption Secrets Block")
		}
		b = b[n:]
	}
	sort.Strings(lines)
	return lines
}

func sortedLines(logs ...[]byte) []string {
	var out []string
	for _, l := range logs {
		for _, s := range strings.SplitAfter(string(l), "\n") {
			if s != "" {
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestQueryWithSecrets: archive --keys keeps the key log lines shipped by
// decap keys, and archive query --with-secrets writes those of the TLS
// connections in its result (TLS 1.3 and 1.2, real crypto/tls sessions) as
// a Decryption Secrets Block before the packets: tshark decrypts the HTTP
// inside with no option, and cannot without --with-secrets. Keys of a
// connection not in the result are not written.
func TestQueryWithSecrets(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark is required (installed by .ci/run)")
	}
	_, url := natstest.Run(t)
	_, js := connect(t, url)
	dir := t.TempDir()
	cfg := testConfig(url, dir)
	cfg.Keys = true
	cfg.KeysFlush = 300 * time.Millisecond
	stop, _ := runArchive(t, cfg)

	cert := tlstest.SelfSigned(t, "feed.example").TLS
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	f13, k13 := tlsSession(t, cert, tls.VersionTLS13, 50013, t0, "/secret-tls13")
	f12, k12 := tlsSession(t, cert, tls.VersionTLS12, 50012, t0.Add(time.Second), "/secret-tls12")
	_, kOther := tlsSession(t, cert, tls.VersionTLS13, 50099, t0.Add(2*time.Second), "/not-archived")
	publish(t, js, toPubs(append(f13, f12...), proto.DefaultShards), 8)

	keyFile := filepath.Join(t.TempDir(), "keylog")
	if err := os.WriteFile(keyFile, bytes.Join([][]byte{k13, kOther, k12}, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	kcfg := keys.DefaultConfig()
	kcfg.Common.NATSURL, kcfg.Common.HTTPAddr, kcfg.Path, kcfg.Source = url, "", keyFile, "prod-1"
	kd, _ := stage.TestDeps("decap-keys")
	if err := keys.Run(context.Background(), kcfg, kd); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, js, cfg.Consumer)
	waitKeysAcked(t, js, cfg.KeysConsumer)
	stop()

	out := filepath.Join(t.TempDir(), "out.pcapng")
	from, to := t0.Add(-time.Second).Format(time.RFC3339Nano), time.Now().Add(time.Minute).Format(time.RFC3339Nano)
	_, errs, code := runCLI(t, "query", "--store", dir, "--from", from, "--to", to, "--with-secrets", "--out", out)
	if code != 0 || !strings.Contains(errs, "TLS keys of 2 of 2 connections") {
		t.Fatalf("query --with-secrets: exit %d\n%s", code, errs)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, want := dsbLines(t, b), sortedLines(k13, k12)
	if strings.Join(got, "") != strings.Join(want, "") {
		t.Fatalf("secrets block holds %d lines, want the %d of the two connections returned", len(got), len(want))
	}
	uris := tsharkFields(t, out, "http.request", "http.request.uri")
	if strings.Join(uris, ",") != "/secret-tls12,/secret-tls13" {
		t.Fatalf("tshark decrypted requests %q, want both", uris)
	}
	bodies := tsharkFields(t, out, "http.response", "http.file_data")
	if len(bodies) != 2 {
		t.Fatalf("tshark decrypted responses %q", bodies)
	}

	// Without --with-secrets the same packets are not decryptable.
	plain := filepath.Join(t.TempDir(), "plain.pcapng")
	if _, errs, code := runCLI(t, "query", "--store", dir, "--from", from, "--to", to, "--out", plain); code != 0 {
		t.Fatalf("query: exit %d\n%s", code, errs)
	}
	if uris := tsharkFields(t, plain, "http.request", "http.request.uri"); len(uris) != 0 {
		t.Fatalf("tshark read requests %q without secrets", uris)
	}
	if pb, _ := os.ReadFile(plain); bytes.Contains(pb, k13[:40]) {
		t.Fatal("keys in the output without --with-secrets")
	}
}

// TestQueryWithSecretsRefused: --with-secrets on an archive without keys
// exits 1 with one line and writes no output; with --format pcap it is a
// flag error.
func TestQueryWithSecretsRefused(t *testing.T) {
	dir := t.TempDir()
	st, err := store.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	writeChunks(t, st, synth(100, t0.UnixNano(), int64(time.Millisecond), 5, 4, 1, 300), 32, 1, newParams(32<<10, 512<<10, 1000), 512<<10)
	out := filepath.Join(t.TempDir(), "out.pcapng")
	_, errs, code := runCLI(t, "query", "--store", dir, "--from", "2026-11-25T14:00:00Z", "--to", "2026-11-25T15:00:00Z", "--with-secrets", "--out", out)
	if code != 1 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "holds no TLS keys") {
		t.Fatalf("exit %d, stderr %q: want 1 and one line saying the archive holds no keys", code, errs)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("an output file was written")
	}
	_, _, code = runCLI(t, "query", "--store", dir, "--with-secrets", "--format", "pcap")
	if code != 2 {
		t.Errorf("--with-secrets --format pcap: exit %d, want 2", code)
	}
	if has, err := query.HasKeys(context.Background(), st); err != nil || has {
		t.Errorf("HasKeys = %v, %v", has, err)
	}
}

// waitKeysAcked waits until the archive's keys consumer has acknowledged
// every message of TAPLINE_KEYS.
func waitKeysAcked(t *testing.T, js jetstream.JetStream, consumer string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := js.Consumer(ctx, proto.KeysStream, consumer)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = c.Info(ctx)
		}
		cancel()
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("archive did not store the key lines within 60s")
}
