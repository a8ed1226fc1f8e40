package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// server is one nats-server process with a fresh store.
type server struct {
	p   *proc
	url string
	nc  *nats.Conn
	js  jetstream.JetStream
}

// startServer starts nats-server as compose.yaml runs it
// (deploy/nats/nats.conf: file store, max_payload 8MB) on a free port.
func startServer(ctx context.Context, dir string) (*server, error) {
	port := freePort()
	store := filepath.Join(dir, "jetstream")
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listen: 127.0.0.1:%d\nmax_payload: 8MB\njetstream {\n  store_dir: %q\n  max_file_store: 20GB\n  max_memory_store: 256MB\n}\n", port, store), 0o644); err != nil {
		return nil, err
	}
	p, err := start(dir, "nats-server", filepath.Join(*binDir, "nats-server"), "--config", conf)
	if err != nil {
		return nil, err
	}
	s := &server{p: p, url: "nats://127.0.0.1:" + strconv.Itoa(port)}
	for {
		if s.nc, err = nats.Connect(s.url); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			p.stop()
			return nil, fmt.Errorf("nats-server: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.js, _ = jetstream.New(s.nc)
	return s, nil
}

func (s *server) stop() {
	if s.nc != nil {
		s.nc.Close()
	}
	s.p.stop()
}

// stored is how many entries the messages stream holds.
func (s *server) stored(ctx context.Context, stream string) uint64 {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// stage starts one Tapline stage binary against the server with its
// /metrics on a free port, and waits for /healthz.
func (s *server) stage(ctx context.Context, dir, name string, args ...string) (*proc, string, error) {
	addr := "127.0.0.1:" + strconv.Itoa(freePort())
	args = append([]string{"--nats-url", s.url, "--http", addr, "--log-level", "warn"}, args...)
	p, err := start(dir, name, filepath.Join(*binDir, name), args...)
	if err != nil {
		return nil, "", err
	}
	if name != "decap" {
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := waitHTTP(hctx, "http://"+addr+"/healthz"); err != nil {
			p.stop()
			return nil, "", err
		}
	}
	return p, "http://" + addr + "/metrics", nil
}

// waitPublished waits until the messages stream holds want entries; with
// want 0 it waits until reassemble has published msgs complete messages
// and conns closes, and the stream has stopped growing, and returns its
// count (the calibration of the first round).
func waitPublished(ctx context.Context, s *server, metrics string, want uint64, msgs, conns int) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var last uint64
	stable := time.Time{}
	for {
		n := s.stored(ctx, proto.MsgsStream)
		if want > 0 && n >= want {
			return n, nil
		}
		if want == 0 {
			got, _ := metricSum(metrics, "tapline_reassemble_messages_total")
			closed, _ := metricSum(metrics, "tapline_reassemble_connections_closed_total")
			switch {
			case int(got) < msgs || int(closed) < conns || n != last:
				stable = time.Time{}
			case stable.IsZero():
				stable = time.Now()
			case time.Since(stable) > 1500*time.Millisecond:
				return n, nil
			}
		}
		last = n
		select {
		case <-ctx.Done():
			return n, fmt.Errorf("messages stream holds %d entries, want %d: %w", n, want, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// checkExact fails unless reassemble published msgs messages, all complete.
func checkExact(metrics string, msgs int) error {
	got, err := metricSum(metrics, "tapline_reassemble_messages_total")
	if err != nil {
		return err
	}
	inc, _ := metricSum(metrics, "tapline_reassemble_incomplete_messages_total")
	if int(got) != msgs || inc != 0 {
		return fmt.Errorf("reassemble published %v messages (%v incomplete), the capture holds %d", got, inc, msgs)
	}
	return nil
}
