package keys

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// TestFollowPartialLine: with --follow a line without its "\n" is held
// until the "\n" comes, then stored once, whole.
func TestFollowPartialLine(t *testing.T) {
	url, js := serve(t)
	path := filepath.Join(t.TempDir(), "keylog")
	lines := keyLines("partial", 0, 3)
	appendFile(t, path, lines[0], lines[1][:30])
	cfg := testConfig(url, path)
	cfg.Follow = true
	s := start(t, cfg)
	subj := proto.KeysSubject(cfg.Source)
	waitStored(t, js, subj, lines[:1])
	// Many polls later the partial line is still not published.
	time.Sleep(20 * cfg.Poll)
	if got := stored(t, js, subj); len(got) != 1 {
		t.Fatalf("%d lines stored while the second was partial", len(got))
	}
	appendFile(t, path, lines[1][30:], lines[2])
	waitStored(t, js, subj, lines)
	if err := s.stop(t); err != nil {
		t.Fatalf("follow run ended with %v", err)
	}
}

// TestFollowRotation: a rename rotation (logrotate create) loses and
// repeats nothing: the old file is read to its end, including lines the
// writer still appends to its open descriptor after the rename, and the new
// file from its start.
func TestFollowRotation(t *testing.T) {
	url, js := serve(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "keylog")
	cfg := testConfig(url, path)
	cfg.Follow = true
	cfg.RotateWait = 500 * time.Millisecond
	// The writer keeps one descriptor, as Go's KeyLogWriter does.
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write := func(f *os.File, ls []string) {
		if _, err := f.WriteString(strings.Join(ls, "")); err != nil {
			t.Fatal(err)
		}
	}
	s := start(t, cfg)
	subj := proto.KeysSubject(cfg.Source)
	all := keyLines("rot", 0, 100)
	write(w, all)
	waitStored(t, js, subj, all)
	for round := 0; round < 3; round++ {
		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		// Still written through the old descriptor after the rename.
		late := keyLines("rot-late", round*100, round*100+50)
		write(w, late)
		all = append(all, late...)
		w.Close()
		w, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		fresh := keyLines("rot-new", round*100, round*100+70)
		write(w, fresh)
		// Order between the old file's last lines and the new file's first
		// lines is not promised; every line exactly once is.
		waitStoredSet(t, js, subj, append(append([]string(nil), all...), fresh...))
		all = append(all, fresh...)
		os.Remove(path + ".1")
	}
	if err := s.stop(t); err != nil {
		t.Fatalf("follow run ended with %v", err)
	}
	if v := counter(t, s.reg, "tapline_keys_rotations_total"); v != 3 {
		t.Errorf("rotations %v, want 3", v)
	}
}

// TestFollowTruncation: copytruncate (copy, then truncate in place) loses
// and repeats nothing written before the copy or after the truncation,
// also when the file has grown past its old size before the next check,
// and when the writer does not append (zeros before its next line).
func TestFollowTruncation(t *testing.T) {
	url, js := serve(t)
	path := filepath.Join(t.TempDir(), "keylog")
	cfg := testConfig(url, path)
	cfg.Follow = true
	s := start(t, cfg)
	subj := proto.KeysSubject(cfg.Source)
	all := keyLines("tr", 0, 20)
	appendFile(t, path, all...)
	waitStored(t, js, subj, all)

	copyTruncate := func() {
		t.Helper()
		in, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(path + ".1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	}

	// Truncated, then a little written: shorter than before.
	copyTruncate()
	next := keyLines("tr-a", 0, 2)
	appendFile(t, path, next...)
	all = append(all, next...)
	waitStored(t, js, subj, all)

	// Truncated and grown past the old size between two checks: the
	// stage is stopped from checking by a long poll.
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	cfg.Poll = 2 * time.Second
	// A new run reads the file from its start; its lines were stored by
	// the previous run within the duplicate window with the same ids.
	s = start(t, cfg)
	// Let it take its first look (it has read the file) before the change.
	for !hasCounter(s.reg, "tapline_keys_lines_read_total") || counter(t, s.reg, "tapline_keys_lines_read_total") < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	copyTruncate()
	grown := keyLines("tr-b", 0, 10)
	appendFile(t, path, grown...)
	all = append(all, grown...)
	waitStored(t, js, subj, all)

	// A writer without O_APPEND keeps its offset: after the truncation the
	// file has a hole of zeros before the next line.
	f, err := os.OpenFile(path, os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	end, _ := f.Seek(0, io.SeekEnd)
	copyTruncate()
	if _, err := f.Seek(end, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	holed := keyLines("tr-c", 0, 3)
	if _, err := f.WriteString(strings.Join(holed, "")); err != nil {
		t.Fatal(err)
	}
	all = append(all, holed...)
	waitStored(t, js, subj, all)
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	if v := counter(t, s.reg, "tapline_keys_truncations_total"); v < 2 {
		t.Errorf("truncations %v, want at least 2", v)
	}
	if v := counter(t, s.reg, "tapline_keys_lines_bad_total"); v != 0 {
		t.Errorf("%v bad lines", v)
	}
}

// TestFollowNATSRestart: lines written while NATS restarts are stored once
// it is back, none twice.
func TestFollowNATSRestart(t *testing.T) {
	srv, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	path := filepath.Join(t.TempDir(), "keylog")
	cfg := testConfig(url, path)
	cfg.Follow = true
	cfg.AckTimeout = 500 * time.Millisecond
	s := start(t, cfg)
	subj := proto.KeysSubject(cfg.Source)
	all := keyLines("rs", 0, 200)
	appendFile(t, path, all...)
	waitStored(t, js, subj, all)

	stopWriting := make(chan struct{})
	wrote := make(chan []string)
	go func() {
		var ls []string
		for i := 0; ; i++ {
			select {
			case <-stopWriting:
				wrote <- ls
				return
			default:
			}
			l := keyLine("rs-during", i)
			appendFile(t, path, l)
			ls = append(ls, l)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	port := srv.Addr().(*net.TCPAddr).Port
	dir := filepath.Dir(srv.JetStreamConfig().StoreDir)
	srv.Shutdown()
	srv.WaitForShutdown()
	time.Sleep(time.Second) // lines accumulate while NATS is away
	var next *server.Server
	var err error
	for range 50 {
		if next, err = natstest.Start(natstest.Options{Port: port, StoreDir: dir}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(next.Shutdown)
	time.Sleep(300 * time.Millisecond)
	close(stopWriting)
	all = append(all, <-wrote...)
	waitStored(t, js, subj, all)
	if err := s.stop(t); err != nil {
		t.Fatalf("follow run ended with %v", err)
	}
}

// waitStoredSet is waitStored for lines whose order across files is not
// promised: each line of want exactly once.
func waitStoredSet(t *testing.T, j jetstream.JetStream, subj string, want []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := stored(t, j, subj)
		seen := map[string]int{}
		for _, l := range got {
			seen[l]++
			if seen[l] > 1 {
				t.Fatalf("a line stored twice")
			}
		}
		missing := 0
		for _, l := range want {
			if seen[l] == 0 {
				missing++
			}
		}
		if len(got) > len(want) {
			t.Fatalf("stored %d lines, want %d", len(got), len(want))
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d lines missing after 60s", missing, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
