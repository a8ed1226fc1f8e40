package decap

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/vxlan"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// syncBuf is a log sink shared by the stage's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startClusterDecap runs decap with R3 streams on the cluster's URLs,
// opening its own VXLAN socket on a free 127.0.0.1 port, and returns the
// port, its deps, its log and a stop function.
func startClusterDecap(t *testing.T, c *natstest.Cluster) (uint16, stage.Deps, *syncBuf, func()) {
	t.Helper()
	ports, err := natstest.FreePorts(1) // a TCP port; its UDP twin is free in practice
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Common.NATSURL = c.URLs()
	cfg.Common.HTTPAddr = ""
	cfg.Common.Streams.Replicas = 3
	cfg.ListenAddr = []string{"127.0.0.1"}
	cfg.VXLANPort, cfg.GENEVEPort = ports[0], 0
	cfg.Sockets = 1
	logs := &syncBuf{}
	d, _ := stage.TestDeps("decap")
	d.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, d) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("decap: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Error("decap did not stop within 60 s")
			}
		})
	}
	t.Cleanup(stop)
	return uint16(ports[0]), d, logs, stop
}

// udpBound reports whether someone has port bound on 127.0.0.1 (our own
// bind, without SO_REUSEPORT, fails then).
func udpBound(port uint16) bool {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// TestReadyOnlyWhenStreamsAccept: decap started while its R3 streams
// cannot be provisioned (two of three nodes down) is not healthy, keeps
// its mirror port closed and says so in one line; once the nodes are back
// it provisions the streams, becomes healthy, opens the port and stores
// what it receives.
func TestReadyOnlyWhenStreamsAccept(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	c.Kill(1)
	c.Kill(2)
	port, d, logs, stop := startClusterDecap(t, c)
	time.Sleep(4 * time.Second) // several provisioning attempts
	failing := d.Health.Check()
	if _, ok := failing["streams"]; !ok {
		t.Errorf("while the streams cannot be provisioned /healthz fails %v; want the streams check failing", failing)
	}
	if udpBound(port) {
		t.Error("the mirror port is open while the streams cannot take a publish")
	}
	if n := strings.Count(logs.String(), "waiting for JetStream streams"); n != 1 {
		t.Errorf("%d waiting lines, want 1:\n%s", n, logs.String())
	}
	for _, i := range []int{1, 2} {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "decap healthy after the nodes came back", func() bool { return len(d.Health.Check()) == 0 })
	if !udpBound(port) {
		t.Fatal("healthy but the mirror port is not open")
	}
	conn := dialUDP(t, port)
	dg := append(vxlan.Append(nil, 3), make([]byte, 100)...)
	reg := d.Metrics.(prometheus.Gatherer)
	poll(t, "a batch stored", func() bool {
		_, _ = conn.Write(dg)
		return metric(t, reg, "tapline_decap_published_batches_total") >= 1
	})
	stop()
	t.Logf("decap log:\n%s", logs.String())
}

// TestLeaderChangeIsNotMissingStream: stream leader elections under a
// publishing decap (the leader steps down, then its node is killed) never
// make decap re-create or update TAPLINE_FRAMES: a stream an operator
// configured differently keeps its settings, and every frame is stored.
func TestLeaderChangeIsNotMissingStream(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	port, d, logs, stop := startClusterDecap(t, c)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("decap log:\n%s", logs.String())
		}
	})
	reg := d.Metrics.(prometheus.Gatherer)
	poll(t, "decap healthy", func() bool { return udpBound(port) && len(d.Health.Check()) == 0 })
	_, js := natstest.Connect(t, c.URLs())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The operator sets the frames' max age to 1 h after decap started.
	s, err := js.Stream(ctx, proto.FramesStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxAge = time.Hour
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	conn := dialUDP(t, port)
	var sent int
	sendStop := make(chan struct{})
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for {
			select {
			case <-sendStop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			inner := make([]byte, 100)
			copy(inner[60:], fmt.Sprintf("frame %08d", sent))
			dg := append(vxlan.Append(nil, 3), inner...)
			if _, err := conn.Write(dg); err == nil {
				sent++
			}
		}
	}()
	nc, _ := natstest.Connect(t, c.URLs())
	for range 3 {
		time.Sleep(time.Second)
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+proto.FramesStream, nil, 5*time.Second); err != nil {
			t.Logf("stepdown: %v", err)
		}
	}
	// Then the two nodes decap is not connected to go down for a while:
	// no stream leader, no answer to a publish, until they are back.
	time.Sleep(time.Second)
	var down []int
	for i := range 3 {
		if !hasClient(c.Server(i), "tapline-decap") {
			down = append(down, i)
		}
	}
	if len(down) != 2 {
		t.Fatalf("decap connected to %d nodes", 3-len(down))
	}
	for _, i := range down {
		c.Kill(i)
	}
	time.Sleep(8 * time.Second)
	for _, i := range down {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	before := metric(t, reg, "tapline_decap_published_batches_total")
	poll(t, "publishes acknowledged again", func() bool {
		return metric(t, reg, "tapline_decap_published_batches_total") >= before+10
	})
	time.Sleep(2 * time.Second)
	close(sendStop)
	<-sendDone
	// Under load the last datagrams may still wait in the socket when the
	// publish buffer is empty: stopping then would drop them unread.
	poll(t, "every datagram read", func() bool { return metric(t, reg, "tapline_decap_udp_datagrams_total") >= float64(sent) })
	poll(t, "everything sent stored", func() bool { return metric(t, reg, "tapline_decap_publish_buffer_bytes") == 0 })
	retries := metric(t, reg, "tapline_decap_publish_retries_total")
	stop()
	got := streamConfig(t, js, proto.FramesStream)
	if got.MaxAge != time.Hour {
		t.Errorf("the frames stream's max age is %s after leader changes; the operator's 1h was changed", got.MaxAge)
	}
	if strings.Contains(logs.String(), "provisioned again") {
		t.Errorf("decap provisioned the streams again on a leader change:\n%s", logs.String())
	}
	// The restarted nodes may still be catching up: read once the stream
	// answers reads again.
	poll(t, "the stream readable", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, proto.FramesStream)
		if err != nil {
			return false
		}
		st := s.CachedInfo().State
		_, err1 := s.GetMsg(ctx, st.FirstSeq)
		_, err2 := s.GetMsg(ctx, st.LastSeq)
		return err1 == nil && err2 == nil
	})
	frames := 0
	for _, p := range fetchFrames(t, c.URLs()) {
		if p.VNI == 3 {
			frames++
		}
	}
	t.Logf("sent %d datagrams, %d frames stored, %.0f publish retries", sent, frames, retries)
	if frames != sent {
		t.Errorf("%d datagrams sent, %d frames stored", sent, frames)
	}
}

// hasClient reports whether srv has a client connection named name.
func hasClient(srv *server.Server, name string) bool {
	if srv == nil {
		return false
	}
	cz, err := srv.Connz(&server.ConnzOptions{})
	if err != nil {
		return false
	}
	for _, c := range cz.Conns {
		if c.Name == name {
			return true
		}
	}
	return false
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, name)
		cancel()
		if err == nil {
			return s.CachedInfo().Config
		}
		t.Logf("stream info: %v", err)
		time.Sleep(100 * time.Millisecond)
	}
}
