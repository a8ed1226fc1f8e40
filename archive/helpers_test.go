package archive

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/archive/internal/s3test"
	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

const capturesDir = "../testdata/captures"

// pub is a frame with the subject decap would publish it on.
type pub struct {
	f     framebatch.Frame
	shard int
}

// readCapture reads a capture through decap's reader (as decap --read
// would publish it), copying the frames.
func readCapture(t testing.TB, path string, shards int) []pub {
	t.Helper()
	var out []pub
	err := decap.ReadCaptureShards(path, shards, func(f *framebatch.Frame, shard int) error {
		c := *f
		c.Data = append([]byte(nil), f.Data...)
		c.OrigLen = max(c.OrigLen, len(c.Data)) // as pcapng stores it
		out = append(out, pub{c, shard})
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return out
}

// publish sends frames as batches of up to perBatch frames per subject,
// like decap, and returns the number of batches.
func publish(t testing.TB, js jetstream.JetStream, frames []pub, perBatch int) int {
	t.Helper()
	ctx := context.Background()
	var err error
	for range 30 { // short timeouts and retries: see natstest.Restart
		ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = proto.EnsureStreams(ectx, js, proto.StreamOptions{}, proto.FramesStream)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	type subj struct {
		vni   uint32
		shard int
	}
	writers := map[subj]*framebatch.Writer{}
	var order []subj
	n := 0
	flush := func(s subj) {
		w := writers[s]
		if w.Frames() == 0 {
			return
		}
		// Short timeouts and retries (the first request after a NATS
		// restart can be lost); the message ID makes a retry of a
		// publish that did land a no-op.
		id := fmt.Sprintf("test-%d-%d-%d", s.vni, s.shard, w.Frames()) + fmt.Sprintf("-%d", frameKey(w))
		for range 30 {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = js.Publish(pctx, proto.FramesSubject(s.vni, s.shard), w.Bytes(), jetstream.WithMsgID(id))
			cancel()
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		n++
		w.Reset()
	}
	for i := range frames {
		s := subj{frames[i].f.VNI, frames[i].shard}
		w := writers[s]
		if w == nil {
			w = &framebatch.Writer{App: "tapline decap"}
			writers[s] = w
			order = append(order, s)
		}
		w.Add(&frames[i].f)
		if w.Frames() >= perBatch {
			flush(s)
		}
	}
	for _, s := range order {
		flush(s)
	}
	return n
}

// frameKey identifies a batch's content (for its message ID).
func frameKey(w *framebatch.Writer) uint64 {
	return xxhash.Sum64(w.Bytes())
}

func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natstest.Connect(t, url)
}

// testConfig is a Config for tests: small chunks and frames so a few
// captures make several of each.
func testConfig(natsURL, location string) Config {
	var c Config
	fs := flag.NewFlagSet("archive", flag.ContinueOnError)
	c.Register(fs)
	c.Common.NATSURL = natsURL
	c.Common.HTTPAddr = ""
	c.Store.Location = location
	c.ChunkBytes = 64 << 10
	c.FrameBytes = 8 << 10
	c.ChunkAge = time.Second
	c.AckWait = 3 * time.Second
	c.DrainTimeout = 10 * time.Second
	return c
}

// s3Location starts versitygw and returns the store location and S3
// options for it.
func s3Location(t testing.TB) (*s3test.Server, StoreConfig) {
	srv := s3test.Start(t)
	return srv, StoreConfig{Location: "s3://" + s3test.Bucket + "/archive", S3: storeS3(srv)}
}

func storeS3(srv *s3test.Server) store.S3Options {
	return store.S3Options{Endpoint: srv.Endpoint(), PathStyle: true, Region: "us-east-1", PartSize: 5 << 20}
}

// runArchive runs the stage in this process until the test stops it.
func runArchive(t testing.TB, cfg Config) (stop func(), d stage.Deps) {
	t.Helper()
	stop, d, _ = runArchiveReg(t, cfg)
	return stop, d
}

// runArchiveReg is runArchive that also returns the metrics registry.
func runArchiveReg(t testing.TB, cfg Config) (stop func(), d stage.Deps, reg *prometheus.Registry) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, reg = stage.TestDeps("archive")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, d) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("Run did not stop within 60s")
			}
		})
	}
	t.Cleanup(stop)
	return stop, d, reg
}

// waitAcked waits until the archive consumer has acknowledged everything
// in the stream.
func waitAcked(t testing.TB, js jetstream.JetStream, consumer string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := js.Consumer(ctx, proto.FramesStream, consumer)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = c.Info(ctx)
		}
		cancel()
		if err == nil {
			last = fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
			if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
				return
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("archive did not acknowledge everything within 90s: %s", last)
}

// queryStore runs a query through the library and returns the pcapng.
func queryStore(t testing.TB, st store.Store, f query.Filter) ([]byte, query.Result) {
	t.Helper()
	ctx := context.Background()
	chunks, errs := query.List(ctx, st, f)
	if len(errs) > 0 {
		t.Fatalf("list: %v", errs)
	}
	var buf bytes.Buffer
	res, err := query.Write(ctx, st, chunks, f, &buf, nil)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if len(res.Errors) > 0 {
		t.Fatalf("query errors: %v", res.Errors)
	}
	return buf.Bytes(), res
}

// decodeAll reads every frame of a pcapng capture.
func decodeAll(t testing.TB, b []byte) []framebatch.Frame {
	t.Helper()
	r := framebatch.NewReader(b)
	var out []framebatch.Frame
	for {
		var f framebatch.Frame
		err := r.Next(&f)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("output is not valid pcapng: %v", err)
		}
		out = append(out, f)
	}
}

// sameFrames checks got holds exactly the frames of want (as multisets),
// with their time, interface, lengths and bytes, and that got is in time
// order.
func sameFrames(t testing.TB, got, want []framebatch.Frame) {
	t.Helper()
	for i := 1; i < len(got); i++ {
		if got[i].TimeNs < got[i-1].TimeNs {
			t.Fatalf("output not in time order at packet %d", i)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d", len(got), len(want))
	}
	key := func(a, b framebatch.Frame) int {
		return cmp.Or(cmp.Compare(a.TimeNs, b.TimeNs), cmp.Compare(a.VNI, b.VNI), cmp.Compare(a.OrigLen, b.OrigLen), bytes.Compare(a.Data, b.Data))
	}
	g, w := slices.Clone(got), slices.Clone(want)
	slices.SortFunc(g, key)
	slices.SortFunc(w, key)
	var gb, wb int
	for i := range g {
		gb += len(g[i].Data)
		wb += len(w[i].Data)
		a, b := g[i], w[i]
		if key(a, b) != 0 || a.Iface() != b.Iface() {
			t.Fatalf("packet %d differs: got %v %+v (%d bytes), want %v %+v (%d bytes)", i, a.TimeNs, a.Iface(), len(a.Data), b.TimeNs, b.Iface(), len(b.Data))
		}
	}
	if gb != wb {
		t.Fatalf("got %d bytes, want %d", gb, wb)
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// archiveBinary builds cmd/archive once per test run.
func archiveBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tapline-archive-bin-*")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "archive")
		out, err := exec.Command("go", "build", "-o", binPath, "./cmd/archive").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/archive: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func frames(ps []pub) []framebatch.Frame {
	out := make([]framebatch.Frame, len(ps))
	for i, p := range ps {
		out[i] = p.f
	}
	return out
}
