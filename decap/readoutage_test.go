package decap

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// writeCountedPcap writes a classic pcap of n Ethernet frames of size
// bytes (not IP: shard 0, VNI 0), frame i carrying i in its bytes 14..21.
func writeCountedPcap(t *testing.T, n, size int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "counted.pcap")
	var b bytes.Buffer
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 65535)
	binary.LittleEndian.PutUint32(hdr[20:], 1) // Ethernet
	b.Write(hdr)
	frame := make([]byte, size)
	frame[12], frame[13] = 0x88, 0xb5 // local experimental EtherType
	rec := make([]byte, 16)
	for i := range n {
		binary.LittleEndian.PutUint32(rec[0:], uint32(1_700_000_000+i/1000))
		binary.LittleEndian.PutUint32(rec[4:], uint32(i%1000))
		binary.LittleEndian.PutUint32(rec[8:], uint32(size))
		binary.LittleEndian.PutUint32(rec[12:], uint32(size))
		binary.BigEndian.PutUint64(frame[14:], uint64(i))
		b.Write(rec)
		b.Write(frame)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReadSurvivesNATSRestart: decap --read whose NATS server goes away in
// the middle of the file stops reading once --buffer-bytes are waiting
// (nothing dropped, the buffer never past its bound), says so, and goes on
// when the server is back: every frame of the file is stored once, in
// order.
func TestReadSurvivesNATSRestart(t *testing.T) {
	const frames, size = 20000, 1000
	path := writeCountedPcap(t, frames, size)
	srv, url := natstest.Run(t)
	port := srv.Addr().(*net.TCPAddr).Port
	dir := filepath.Dir(srv.JetStreamConfig().StoreDir)

	cfg := DefaultConfig()
	cfg.Common.NATSURL = url
	cfg.Common.HTTPAddr = ""
	cfg.Read = path
	cfg.BatchBytes = 8 << 10
	cfg.BufferBytes = 64 << 10
	cfg.AckTimeout = 500 * time.Millisecond
	d, reg := stage.TestDeps("decap")
	var logs syncBuffer
	d.Log = slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, d) }()

	poll(t, "first batches stored", func() bool { return gauge(reg, "tapline_decap_published_batches_total") >= 5 })
	srv.Shutdown()
	srv.WaitForShutdown()
	select {
	case err := <-done:
		t.Fatalf("decap --read ended while NATS was down: %v", err)
	default:
	}
	poll(t, "reading paused for a full buffer", func() bool { return bytes.Contains(logs.Bytes(), []byte("reading paused")) })
	stored := gauge(reg, "tapline_decap_published_frames_total")
	if stored >= frames {
		t.Fatalf("every frame stored before the server went away (%v): the file is too short for the test", stored)
	}
	// The reader waits: the buffer stays within its bound for a while.
	for range 20 {
		if b := gauge(reg, "tapline_decap_publish_buffer_bytes"); b > float64(cfg.BufferBytes) {
			t.Fatalf("buffer %v bytes past --buffer-bytes %d", b, cfg.BufferBytes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	restartAt(t, port, dir)
	if err := <-done; err != nil {
		t.Fatalf("decap --read after the restart: %v", err)
	}
	if n := gauge(reg, "tapline_decap_publish_drops_total"); n != 0 {
		t.Fatalf("%v batches dropped", n)
	}
	if !bytes.Contains(logs.Bytes(), []byte("reading resumed")) {
		t.Fatalf("no 'reading resumed' line in the log:\n%s", logs.Bytes())
	}
	got := fetchFrames(t, url)
	if len(got) != frames {
		t.Fatalf("%d frames stored, want %d", len(got), frames)
	}
	for i, p := range got {
		if v := binary.BigEndian.Uint64(p.Frame.Data[14:]); v != uint64(i) {
			t.Fatalf("stored frame %d is frame %d of the file", i, v)
		}
	}
}

// gauge is metric without a testing.T: safe from any goroutine.
func gauge(reg prometheus.Gatherer, name string) float64 {
	v, _ := stage.MetricSum(reg, name)
	return v
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Bytes returns a copy of what was written.
func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}
