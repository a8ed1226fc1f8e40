package decap

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/vxlan"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// TestNATSOutage: a live decap whose JetStream goes away buffers, drops
// past --buffer-bytes (counted, and reported on tapline.events.decap.drops),
// says so on /healthz, and publishes again by itself when JetStream is back.
func TestNATSOutage(t *testing.T) {
	srv, url := natstest.Run(t)
	port := srv.Addr().(*net.TCPAddr).Port
	dir := filepath.Dir(srv.JetStreamConfig().StoreDir)
	vx, _, _, d, stop := startListeningURL(t, url, func(c *Config) {
		c.BatchBytes = 1024
		c.BufferBytes = 16 << 10
		c.AckTimeout = 500 * time.Millisecond
		c.EventsInterval = 100 * time.Millisecond
	})
	conn := dialUDP(t, vx)
	frame := make([]byte, 1000) // an Ethernet frame of zeros: not IP, shard 0
	dg := append(vxlan.Append(nil, 3), frame...)
	reg := d.Metrics.(prometheus.Gatherer)

	if _, err := conn.Write(dg); err != nil {
		t.Fatal(err)
	}
	poll(t, "first batch stored", func() bool { return metric(t, reg, "tapline_decap_published_batches_total") == 1 })

	srv.Shutdown()
	srv.WaitForShutdown()
	// Keep sending until batches are dropped for a full buffer.
	poll(t, "buffer_full drops", func() bool {
		for range 20 {
			_, _ = conn.Write(dg)
		}
		return metric(t, reg, "tapline_decap_publish_drops_total", "reason", "buffer_full") > 0
	})
	poll(t, "unhealthy", func() bool { return len(d.Health.Check()) > 0 })

	restartAt(t, port, dir)
	poll(t, "buffer published after restart", func() bool {
		return metric(t, reg, "tapline_decap_publish_buffer_bytes") == 0 && metric(t, reg, "tapline_decap_published_batches_total") > 1
	})
	poll(t, "healthy again", func() bool { return len(d.Health.Check()) == 0 })
	// New traffic flows again.
	before := metric(t, reg, "tapline_decap_published_batches_total")
	poll(t, "publishing after restart", func() bool {
		_, _ = conn.Write(dg)
		return metric(t, reg, "tapline_decap_published_batches_total") > before
	})
	// The drop report reached the events stream.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	poll(t, "drop event", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, proto.EventsStream)
		if err != nil {
			return false
		}
		m, err := s.GetLastMsgForSubject(ctx, proto.EventsSubject("decap", "drops"))
		if err != nil {
			return false
		}
		var ev DropsEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("drop event %q: %v", m.Data, err)
		}
		if strings.Count(ev.Instance, "/") != 2 {
			t.Fatalf("drop event instance %q, want <host>/<pid>/<random>", ev.Instance)
		}
		return ev.Drops["buffer_full"].Batches > 0 && ev.Drops["buffer_full"].Frames > 0
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 60s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restartAt starts a JetStream server on the port and store of one that
// was shut down (natstest.Restart needs the old server running).
func restartAt(t *testing.T, port int, dir string) {
	t.Helper()
	var err error
	for range 100 {
		var srv *server.Server
		if srv, err = natstest.Start(natstest.Options{Port: port, StoreDir: dir}); err == nil {
			t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
}

// TestStreamDeleted: when someone deletes TAPLINE_FRAMES under a running
// decap, it provisions the stream again and publishes on.
func TestStreamDeleted(t *testing.T) {
	vx, _, url, d, stop := startListening(t, nil)
	reg := d.Metrics.(prometheus.Gatherer)
	conn := dialUDP(t, vx)
	dg := append(vxlan.Append(nil, 3), make([]byte, 100)...)
	poll(t, "first batch stored", func() bool {
		_, _ = conn.Write(dg)
		return metric(t, reg, "tapline_decap_published_batches_total") >= 1
	})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, proto.FramesStream); err != nil {
		t.Fatal(err)
	}
	poll(t, "frames stored in a re-created stream", func() bool {
		_, _ = conn.Write(dg)
		s, err := js.Stream(ctx, proto.FramesStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs > 0
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
