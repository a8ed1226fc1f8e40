package spool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func rec(i int) []byte { return fmt.Appendf(nil, "record %06d %s", i, string(make([]byte, i%300))) }

func mustOpen(t *testing.T, cfg Config) *Spool {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// readN reads n records and checks they are records from..from+n-1.
func readN(t *testing.T, s *Spool, from, n int) []Record {
	t.Helper()
	var out []Record
	for i := from; i < from+n; i++ {
		r, ok, err := s.TryNext()
		if err != nil || !ok {
			t.Fatalf("record %d: ok %v err %v", i, ok, err)
		}
		if r.Seq != uint64(i) || string(r.Data) != string(rec(i)) || r.Subject != fmt.Sprint("subj.", i%3) {
			t.Fatalf("record %d: got seq %d subject %q data %q", i, r.Seq, r.Subject, r.Data)
		}
		out = append(out, r)
	}
	return out
}

func appendN(t *testing.T, s *Spool, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := s.Append(fmt.Sprint("subj.", i%3), rec(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// TestOrderRestartAndTornTail: records come back in order across
// segments; after a reopen reading resumes at the first unacknowledged
// record; a record torn by a kill at the end is cut off, and appending
// goes on after the last whole one.
func TestOrderRestartAndTornTail(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 4096}
	s := mustOpen(t, cfg)
	appendN(t, s, 0, 200)
	rs := readN(t, s, 0, 200)
	for _, r := range rs[:120] {
		if err := s.Commit(r); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Records != 80 {
		t.Fatalf("pending records %d, want 80", st.Records)
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%020d.seg", 0))); !os.IsNotExist(err) {
		t.Errorf("the first segment, wholly acknowledged, is still there (%v)", err)
	}
	last := segs[len(segs)-1]
	// A torn record: a length and a few bytes, as a kill mid-write leaves.
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0, 0, 1, 0, 9, 9, 9})
	f.Close()

	s = mustOpen(t, cfg)
	if st := s.Stats(); st.Records != 80 {
		t.Fatalf("after reopen: pending records %d, want 80", st.Records)
	}
	readN(t, s, 120, 80)
	appendN(t, s, 200, 10)
	readN(t, s, 200, 10)
	if _, ok, _ := s.TryNext(); ok {
		t.Fatal("a record beyond the last appended")
	}
}

// TestFullRefuses: a full spool refuses records (nothing stored, ErrFull)
// until acknowledgements make room, then accepts again.
func TestFullRefuses(t *testing.T) {
	s := mustOpen(t, Config{Dir: t.TempDir(), MaxBytes: 64 << 10, SegmentBytes: 8 << 10})
	data := make([]byte, 1000)
	n := 0
	for ; ; n++ {
		err := s.Append("s", data)
		if err == ErrFull {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Pending > 64<<10 || st.Records != uint64(n) || st.Peak != st.Pending {
		t.Fatalf("stats %+v after %d records", st, n)
	}
	if err := s.Append("s", data); err != ErrFull {
		t.Fatalf("second append to a full spool: %v", err)
	}
	r, _, _ := s.TryNext()
	if err := s.Commit(r); err != nil {
		t.Fatal(err)
	}
	if err := s.Append("s", data); err != nil {
		t.Fatalf("append after room was made: %v", err)
	}
}

// TestRewind: after a failed upload the records come again from the
// first unacknowledged one.
func TestRewind(t *testing.T) {
	s := mustOpen(t, Config{Dir: t.TempDir(), MaxBytes: 1 << 20, SegmentBytes: 4096})
	appendN(t, s, 0, 100)
	rs := readN(t, s, 0, 60)
	for _, r := range rs[:30] {
		s.Commit(r)
	}
	if err := s.Rewind(30); err != nil {
		t.Fatal(err)
	}
	readN(t, s, 30, 70)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Next(ctx); err == nil {
		t.Fatal("Next on an empty spool with a cancelled context returned a record")
	}
}
