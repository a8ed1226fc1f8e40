package reassemble

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/reassemble/message"
)

// A stock nats-server (max_payload 1 MiB, the README's "any NATS server")
// takes every chunk with its headers: a 3 MiB message arrives whole. With
// 1 MiB chunks the publish was refused ("maximum payload exceeded"), the
// error discarded, and the shard resent forever while nothing arrived.
func TestStockMaxPayload(t *testing.T) {
	srv, err := natstest.Start(natstest.Options{StoreDir: t.TempDir(), MaxPayload: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	url := srv.ClientURL()
	cfg := testConfig(url, 1, "stock")
	cfg.NewDecoder = message.New
	stop := startEngine(t, cfg)
	defer stop()
	_, js := connect(t, url)
	col := collect(t, js)

	clock := time.Now().UnixNano()
	c := newSynthConn(t, "10.0.0.1:40000", "10.0.0.2:5432", 5, &clock)
	payload := pattern(3<<20, 7)
	b := newBatcher(t, js, 50) // 50 frames of 8 KB: batches well under 1 MiB
	add := func(f framebatch.Frame) { b.add(&f, shardOf(t, &f, 1)) }
	add(c.frame(true, "S", nil))
	add(c.frame(false, "SA", nil))
	add(c.frame(true, "A", nil))
	for off := 0; off < len(payload); off += 8000 {
		add(c.frame(true, "PA", payload[off:min(off+8000, len(payload))]))
	}
	add(c.frame(true, "FA", nil))
	add(c.frame(false, "FA", nil))
	add(c.frame(true, "A", nil))
	b.flush()

	var got []byte
	waitFor(t, "the 3 MiB client stream on "+proto.MsgsStream, func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		for _, co := range col.conns {
			if len(co.body[proto.ClientToServer]) >= len(payload) {
				got = append([]byte(nil), co.body[proto.ClientToServer]...)
				return true
			}
		}
		return false
	})
	if !bytes.Equal(got, payload) {
		t.Fatalf("client stream differs: %d bytes, want %d", len(got), len(payload))
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Errorf("collector errors: %v", col.errs)
	}
}

// The start check says in one line what to set on a server whose
// max_payload is too small for a full chunk.
func TestCheckMaxPayload(t *testing.T) {
	if err := proto.CheckMaxPayload(1 << 20); err != nil {
		t.Errorf("stock max_payload refused: %v", err)
	}
	if err := proto.CheckMaxPayload(512 << 10); err == nil {
		t.Error("512 KiB max_payload accepted")
	}
	if proto.MinMaxPayload >= 1_000_000 {
		t.Errorf("a full chunk with headers (%d bytes) does not fit 1 MB", proto.MinMaxPayload)
	}
}

// An entry the server's max_payload refuses is not resent forever with
// "publish not sent": the publisher returns the client's error, naming
// max_payload.
func TestPublisherMaxPayloadError(t *testing.T) {
	srv, err := natstest.Start(natstest.Options{StoreDir: t.TempDir(), MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, js := connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	p := &publisher{js: js, log: slog.New(slog.NewTextHandler(&logs, nil)), max: 4, maxBytes: 1 << 20, maxConn: 16,
		release: func(*batch) {}, onStored: func() {}, onRetry: func() {}, connected: nc.IsConnected, retryCtx: ctx}
	err = p.publish(&nats.Msg{Subject: "t.x", Data: make([]byte, 100<<10)}, nil)
	if err == nil {
		err = p.flush()
	}
	if !errors.Is(err, nats.ErrMaxPayload) || !strings.Contains(err.Error(), "max_payload") {
		t.Fatalf("publish of an entry over max_payload: %v (log %s)", err, logs.String())
	}
}
