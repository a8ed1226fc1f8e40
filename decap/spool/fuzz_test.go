package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenCorrupt: a spool whose segment holds arbitrary bytes (a disk
// error, a foreign file) opens without a crash, keeps the valid records
// before the damage, and appends after them.
func FuzzOpenCorrupt(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(Config{Dir: dir, MaxBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		s.Append("subj.1", rec(i))
	}
	s.Close()
	good, _ := os.ReadFile(filepath.Join(dir, "00000000000000000000.seg"))
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(append(append([]byte(nil), good...), 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, seg []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "00000000000000000000.seg"), seg, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Config{Dir: dir, MaxBytes: 1 << 20})
		if err != nil {
			return
		}
		defer s.Close()
		n := s.Stats().Records
		for i := uint64(0); i < n; i++ {
			r, ok, err := s.TryNext()
			if err != nil || !ok || r.Seq != i {
				t.Fatalf("record %d of %d: %v %v %d", i, n, ok, err, r.Seq)
			}
		}
		if err := s.Append("subj.x", []byte("after")); err != nil {
			t.Fatal(err)
		}
		r, ok, err := s.TryNext()
		if err != nil || !ok || r.Seq != n || string(r.Data) != "after" {
			t.Fatalf("append after the valid records: %v %v %+v", ok, err, r)
		}
	})
}
