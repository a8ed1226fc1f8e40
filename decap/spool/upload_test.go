package spool

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto/natstest"
)

func stream(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"subj.>"}, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
}

// stored returns the stream's messages in order.
func stored(t *testing.T, js jetstream.JetStream) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Data)
	}
	return out
}

func waitStored(t *testing.T, js jetstream.JetStream, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := stored(t, js)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func requireRecords(t *testing.T, got [][]byte, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d messages stored, want %d", len(got), n)
	}
	for i, d := range got {
		if string(d) != string(rec(i)) {
			t.Fatalf("message %d = %q, want record %d", i, d, i)
		}
	}
}

// TestUploadSurvivesOutageAndRestart: records appended while NATS is down
// wait in the spool and arrive, in order and once each, after NATS comes
// back; an uploader stopped and a spool reopened (as after a restart of
// decap capture) go on where they were without sending anything twice.
func TestUploadSurvivesOutageAndRestart(t *testing.T) {
	srv, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	stream(t, js)
	dir := t.TempDir()
	cfg := Config{Dir: dir, MaxBytes: 4 << 20, SegmentBytes: 8 << 10}
	s := mustOpen(t, cfg)
	var st UploadStats
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Upload(ctx, js, UploadConfig{AckTimeout: time.Second, Retry: 100 * time.Millisecond}, &st, log)
	}()
	appendN(t, s, 0, 100)
	requireRecords(t, waitStored(t, js, 100), 100)

	// NATS down: records pile up in the spool.
	port := srv.Addr().(*net.TCPAddr).Port
	store := filepath.Dir(srv.JetStreamConfig().StoreDir)
	srv.Shutdown()
	srv.WaitForShutdown()
	appendN(t, s, 100, 100)
	// Longer than the acknowledgement timeout: windows fail and are sent
	// again.
	time.Sleep(2500 * time.Millisecond)
	if p := s.Stats().Records; p == 0 {
		t.Fatalf("nothing pending while NATS is down")
	}
	srv, err := natstest.Start(natstest.Options{Port: port, StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	requireRecords(t, waitStored(t, js, 200), 200)

	// Restart of the capture: stop the uploader, reopen the spool.
	cancel()
	<-done
	s.Close()
	appendAfter := mustOpen(t, cfg)
	appendN(t, appendAfter, 200, 50)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() {
		if err := appendAfter.Upload(ctx2, js, UploadConfig{}, &st, log); err != nil && ctx2.Err() == nil {
			t.Errorf("upload: %v", err)
		}
	}()
	requireRecords(t, waitStored(t, js, 250), 250)
	time.Sleep(300 * time.Millisecond)
	requireRecords(t, stored(t, js), 250)
	if st.Retries.Load() == 0 {
		t.Errorf("no retries counted across an outage")
	}
}

// TestUploadResendIsDeduplicated: records committed nowhere (a kill after
// JetStream stored them but before the acknowledgement was written) are
// sent again after a reopen and stored once.
func TestUploadResendIsDeduplicated(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	stream(t, js)
	dir := t.TempDir()
	cfg := Config{Dir: dir, MaxBytes: 4 << 20}
	s := mustOpen(t, cfg)
	appendN(t, s, 0, 20)
	// Publish as Upload would, without committing.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		r, _, _ := s.TryNext()
		if _, err := js.Publish(ctx, r.Subject, r.Data, jetstream.WithMsgID(fmt.Sprintf("%s-%d", s.ID(), r.Seq))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = mustOpen(t, cfg)
	var st UploadStats
	uctx, ucancel := context.WithCancel(context.Background())
	defer ucancel()
	go func() { _ = s.Upload(uctx, js, UploadConfig{}, &st, slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats().Records > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	requireRecords(t, stored(t, js), 20)
}
