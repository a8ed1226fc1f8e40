package archive

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/archive/index"
	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/natstest"
)

// syncBuf is a goroutine-safe buffer for a subprocess's stderr.
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

// startProc runs the archive binary.
func startProc(t *testing.T, args []string, env []string) (*exec.Cmd, *syncBuf) {
	t.Helper()
	cmd := exec.Command(archiveBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	errb := &syncBuf{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, errb
}

func countIndexes(t *testing.T, st store.Store) int {
	keys, err := st.List(context.Background(), "vni=")
	if err != nil {
		return 0
	}
	n := 0
	for _, k := range keys {
		if strings.HasSuffix(k, index.IndexSuffix) {
			n++
		}
	}
	return n
}

// waitFor polls cond for up to 60 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after 60s waiting for %s", what)
}

// TestKillMidChunk: SIGKILL the archive process while chunks are open and
// uploads in flight, twice, restart it: the archive holds every frame
// exactly once.
func TestKillMidChunkLocal(t *testing.T) {
	dir := t.TempDir()
	killMidChunk(t, StoreConfig{Location: dir}, nil)
}

// TestKillMidChunkS3 is the same against versitygw.
func TestKillMidChunkS3(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the local-directory variant runs")
	}
	srv, sc := s3Location(t)
	killMidChunk(t, sc, []string{"--s3-endpoint", srv.Endpoint(), "--s3-path-style", "--s3-region", "us-east-1"})
}

func killMidChunk(t *testing.T, sc StoreConfig, extra []string) {
	_, url := natstest.Run(t)
	_, js := connect(t, url)
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).UnixNano()
	in := synth(24000, t0, int64(time.Millisecond), 7, 64, 4, 300)
	publish(t, js, in, 16)
	st, err := store.Open(context.Background(), sc.Location, sc.S3)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--nats-url", url, "--http", "", "--store", sc.Location,
		"--chunk-bytes", "512KiB", "--frame-bytes", "64KiB", "--chunk-age", "2s", "--ack-wait", "2s",
		"--max-pending-batches", "400", "--log-level", "warn"}, extra...)
	for round := 1; round <= 2; round++ {
		before := countIndexes(t, st)
		cmd, errb := startProc(t, args, nil)
		// Mid-chunk: some chunks stored by this run, more open.
		waitFor(t, "a chunk stored", func() bool { return countIndexes(t, st) >= before+round })
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		t.Logf("round %d: killed with %d chunks stored\n%s", round, countIndexes(t, st), errb.String())
	}
	cmd, errb := startProc(t, args, nil)
	waitAcked(t, js, DefaultConsumer)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("archive after SIGTERM: %v\n%s", err, errb.String())
	}
	out, res := queryStore(t, st, query.Filter{})
	t.Logf("%d packets, %d duplicates dropped by the query", res.Packets, res.Duplicates)
	sameFrames(t, decodeAll(t, out), frames(in))
}

// TestCrashBetweenStoreAndAck: chunks stored but never acknowledged (as if
// the process died right after storing) are archived again on
// redelivery; queries still return every frame exactly once.
func TestCrashBetweenStoreAndAck(t *testing.T) {
	dir := t.TempDir()
	_, url := natstest.Run(t)
	_, js := connect(t, url)
	t0 := time.Date(2026, 11, 25, 10, 59, 59, 0, time.UTC).UnixNano() // spans an hour boundary
	in := synth(4000, t0, int64(time.Millisecond/2), 9, 8, 4, 200)
	publish(t, js, in, 16)
	cfg := testConfig(url, dir)
	cfg.ChunkBytes = 128 << 10
	var mu sync.Mutex
	dropped := 0
	cfg.testDropAck = func(key string) bool {
		mu.Lock()
		defer mu.Unlock()
		if dropped < 3 {
			dropped++
			return true
		}
		return false
	}
	stop, _, reg := runArchiveReg(t, cfg)
	waitAcked(t, js, cfg.Consumer)
	stop()
	if counter(t, reg, "tapline_archive_redelivered_batches_total") == 0 {
		t.Errorf("no batch was redelivered")
	}
	st, _ := store.Open(context.Background(), dir, store.S3Options{})
	out, res := queryStore(t, st, query.Filter{})
	// A redelivered chunk usually gets the same sequence range and so the
	// same key (the object is rewritten); if not, the query drops the
	// duplicates.
	t.Logf("%d packets, %d duplicates dropped", res.Packets, res.Duplicates)
	sameFrames(t, decodeAll(t, out), frames(in))
}

// TestS3Outage: the S3 server goes away for a while; nothing is lost,
// errors are counted, and the backlog drains once it is back.
func TestS3Outage(t *testing.T) {
	srv, sc := s3Location(t)
	_, url := natstest.Run(t)
	_, js := connect(t, url)
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixNano()
	in := synth(6000, t0, int64(time.Millisecond), 5, 16, 4, 300)
	cfg := testConfig(url, sc.Location)
	cfg.Store = sc
	cfg.UploadTimeout = 5 * time.Second
	cfg.MaxPending = 256 << 10 // memory bound under test: far less than the backlog
	stop, _, reg := runArchiveReg(t, cfg)
	publish(t, js, in[:2000], 16)
	waitAcked(t, js, cfg.Consumer)

	srv.Stop()
	publish(t, js, in[2000:], 16) // ≈ 1.4 MB
	errs := func() float64 { return counter(t, reg, "tapline_archive_upload_errors_total") }
	waitFor(t, "upload errors while S3 is down", func() bool { return errs() >= 2 })
	// The archive holds at most --max-pending (plus one batch) while S3 is
	// down; the rest waits in JetStream.
	waitFor(t, "the archive to stop taking batches", func() bool {
		return counter(t, reg, "tapline_archive_pending_bytes") >= float64(cfg.MaxPending)
	})
	for range 20 {
		if p := counter(t, reg, "tapline_archive_pending_bytes"); p > float64(cfg.MaxPending+64<<10) {
			t.Fatalf("pending %v bytes exceeds --max-pending %d", p, cfg.MaxPending)
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.Restart()
	waitAcked(t, js, cfg.Consumer)
	waitFor(t, "backlog metric to drain", func() bool { return counter(t, reg, "tapline_archive_backlog_messages") == 0 })
	if counter(t, reg, "tapline_archive_upload_retries_total") == 0 {
		t.Errorf("no retries counted")
	}
	stop()
	st, err := store.Open(context.Background(), sc.Location, sc.S3)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := queryStore(t, st, query.Filter{})
	sameFrames(t, decodeAll(t, out), frames(in))
	if got := counter(t, reg, "tapline_archive_frames_total"); got != float64(len(in)) {
		t.Errorf("frames_total = %v, want %d", got, len(in))
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// TestNATSRestart: the NATS server restarts (same port and store) while
// the archive runs; it carries on and nothing is lost or doubled.
func TestNATSRestart(t *testing.T) {
	dir := t.TempDir()
	srv, url := natstest.Run(t)
	_, js := connect(t, url)
	t0 := time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC).UnixNano()
	in := synth(4000, t0, int64(time.Millisecond), 11, 16, 4, 200)
	cfg := testConfig(url, dir)
	stop, _ := runArchive(t, cfg)
	publish(t, js, in[:2000], 16)
	waitAcked(t, js, cfg.Consumer)
	natstest.Restart(t, srv)
	publish(t, js, in[2000:], 16)
	waitAcked(t, js, cfg.Consumer)
	stop()
	st, _ := store.Open(context.Background(), dir, store.S3Options{})
	out, _ := queryStore(t, st, query.Filter{})
	sameFrames(t, decodeAll(t, out), frames(in))
}

// TestProgressAcks: batches wait in an open chunk longer than the ack wait
// (as with the defaults: 5 min chunks, 1 min ack wait); progress acks keep
// JetStream from redelivering them.
func TestProgressAcks(t *testing.T) {
	dir := t.TempDir()
	_, url := natstest.Run(t)
	_, js := connect(t, url)
	t0 := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC).UnixNano()
	in := synth(500, t0, int64(time.Millisecond), 4, 8, 2, 100)
	cfg := testConfig(url, dir)
	// Progress acks go out every third of the ack wait: 5 s leaves a
	// loaded machine over 3 s of slack before a redelivery.
	cfg.AckWait = 5 * time.Second
	cfg.ChunkAge = 15 * time.Second // three ack waits
	cfg.ChunkBytes = 4 << 20        // rotation by age only
	start := time.Now()
	stop, _, reg := runArchiveReg(t, cfg)
	publish(t, js, in, 16)
	waitAcked(t, js, cfg.Consumer)
	if time.Since(start) < cfg.ChunkAge {
		t.Fatalf("acknowledged after %v, before the chunk age", time.Since(start))
	}
	stop()
	if n := counter(t, reg, "tapline_archive_redelivered_batches_total"); n != 0 {
		t.Fatalf("%v batches redelivered despite progress acks", n)
	}
	st, _ := store.Open(context.Background(), dir, store.S3Options{})
	out, _ := queryStore(t, st, query.Filter{})
	sameFrames(t, decodeAll(t, out), frames(in))
}

// TestKillAndNATSRestart combines the faults: the archive is killed (-9)
// with chunks open and stored, the NATS server restarts (same port and
// store) while the archive is down and again while it runs, and the
// archive is killed once more: every frame the stream holds is in the
// archive exactly once.
func TestKillAndNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	srv, url := natstest.Run(t)
	_, js := connect(t, url)
	t0 := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC).UnixNano()
	in := synth(24000, t0, int64(time.Millisecond), 7, 64, 4, 300)
	st, err := store.Open(context.Background(), dir, store.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--nats-url", url, "--http", "", "--store", dir,
		"--chunk-bytes", "512KiB", "--frame-bytes", "64KiB", "--chunk-age", "2s", "--ack-wait", "2s",
		"--max-pending-batches", "400", "--log-level", "warn"}
	kill := func(cmd *exec.Cmd, errb *syncBuf, what string) {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		t.Logf("%s: killed with %d chunks stored\n%s", what, countIndexes(t, st), errb.String())
	}
	publish(t, js, in[:8000], 16)
	cmd, errb := startProc(t, args, nil)
	waitFor(t, "a chunk stored", func() bool { return countIndexes(t, st) >= 1 })
	kill(cmd, errb, "first run")
	srv = natstest.Restart(t, srv) // while the archive is down

	cmd, errb = startProc(t, args, nil)
	before := countIndexes(t, st)
	published := make(chan struct{})
	go func() {
		defer close(published)
		publish(t, js, in[8000:16000], 16)
	}()
	waitFor(t, "a chunk stored", func() bool { return countIndexes(t, st) >= before+1 })
	srv = natstest.Restart(t, srv) // while the archive runs
	<-published
	before = countIndexes(t, st)
	waitFor(t, "a chunk stored", func() bool { return countIndexes(t, st) >= before+1 })
	kill(cmd, errb, "second run")

	publish(t, js, in[16000:], 16)
	cmd, errb = startProc(t, args, nil)
	waitAcked(t, js, DefaultConsumer)
	natstest.Restart(t, srv) // acknowledgements lost in the restart are redelivered
	waitAcked(t, js, DefaultConsumer)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("archive after SIGTERM: %v\n%s", err, errb.String())
	}
	out, res := queryStore(t, st, query.Filter{})
	t.Logf("%d packets, %d duplicates dropped by the query", res.Packets, res.Duplicates)
	sameFrames(t, decodeAll(t, out), frames(in))
}
