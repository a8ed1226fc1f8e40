package spool

import "testing"

// BenchmarkAppendReadCommit: the spool's own cost per 64 KiB frame batch:
// append, read back, commit (the upload's JetStream round trip excluded).
func BenchmarkAppendReadCommit(b *testing.B) {
	s, err := Open(Config{Dir: b.TempDir(), MaxBytes: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, 64<<10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Append("tapline.frames.1.0", data); err != nil {
			b.Fatal(err)
		}
		r, ok, err := s.TryNext()
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
		if err := s.Commit(r); err != nil {
			b.Fatal(err)
		}
	}
}
