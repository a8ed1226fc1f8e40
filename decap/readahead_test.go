package decap

import (
	"bufio"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// writePlainTCP writes a pcap of n Ethernet/IPv4/TCP frames with 1400
// bytes of payload each, spread over 64 flows.
func writePlainTCP(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 65535)
	binary.LittleEndian.PutUint32(hdr[20:], 1)
	w.Write(hdr)
	frame := make([]byte, 14+20+20+1400)
	frame[12], frame[13] = 0x08, 0x00
	ip := frame[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], uint16(len(frame)-14))
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	tcp := ip[20:]
	tcp[12], tcp[13] = 5<<4, 0x18
	for i := range n {
		binary.BigEndian.PutUint16(tcp[0:], uint16(40000+i%64))
		binary.BigEndian.PutUint16(tcp[2:], 80)
		binary.BigEndian.PutUint32(tcp[4:], uint32(i/64*1400))
		var ph [16]byte
		binary.LittleEndian.PutUint32(ph[0:], uint32(1_780_000_000+i/1000))
		binary.LittleEndian.PutUint32(ph[8:], uint32(len(frame)))
		binary.LittleEndian.PutUint32(ph[12:], uint32(len(frame)))
		w.Write(ph[:])
		w.Write(frame)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestReadAheadBounded: decap --read keeps at most --read-ahead-bytes of
// a file's batches queued or awaiting an ack, whatever --buffer-bytes
// (256 MiB) says, and still publishes every frame. Before, a file was
// read into the whole live buffer: 116-320 MB RSS reading large captures
// (issue 16).
func TestReadAheadBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plain.pcap")
	const frames = 40000 // 58 MB
	writePlainTCP(t, path, frames)
	_, url := natstest.Run(t)
	cfg := DefaultConfig()
	cfg.Common.NATSURL, cfg.Common.HTTPAddr, cfg.Read = url, "", path
	if cfg.ReadAheadBytes != DefaultReadAheadBytes || cfg.BufferBytes < 8*cfg.ReadAheadBytes {
		t.Fatalf("defaults: read-ahead %d, buffer %d", cfg.ReadAheadBytes, cfg.BufferBytes)
	}
	d, reg := stage.TestDeps("decap")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, d) }()
	var peak float64
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		case <-time.After(200 * time.Microsecond):
			peak = max(peak, metric(t, reg, "tapline_decap_publish_buffer_bytes"))
		}
	}
	if limit := float64(cfg.ReadAheadBytes + int64(cfg.BatchBytes)); peak > limit {
		t.Errorf("publish buffer peaked at %.0f bytes, --read-ahead-bytes allows %.0f", peak, limit)
	}
	if got := fetchFrames(t, url); len(got) != frames {
		t.Fatalf("published %d frames of %d", len(got), frames)
	}
	t.Logf("publish buffer peak %.1f MiB", peak/(1<<20))
}
