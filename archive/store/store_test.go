package store

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tapline/tapline/archive/internal/s3test"
)

func TestDir(t *testing.T) {
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conformance(t, d, 1<<20)
}

func TestS3(t *testing.T) {
	srv := s3test.Start(t)
	s, err := Open(context.Background(), "s3://"+s3test.Bucket+"/some/prefix", S3Options{Endpoint: srv.Endpoint(), PathStyle: true, PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// 12 MiB: a multipart upload of three parts.
	conformance(t, s, 12<<20)
}

func TestOpenErrors(t *testing.T) {
	for _, loc := range []string{"", "s3://", "gs://bucket/x"} {
		if _, err := Open(context.Background(), loc, S3Options{}); err == nil {
			t.Errorf("Open(%q) accepted", loc)
		}
	}
}

func conformance(t *testing.T, s Store, big int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 1))
	large := make([]byte, big)
	for i := range large {
		large[i] = byte(rng.Uint32())
	}
	objs := map[string][]byte{
		"vni=1/date=2026-11-25/hour=14/a.pcapng.zst": large,
		"vni=1/date=2026-11-25/hour=14/a.idx.json":   []byte(`{"x":1}`),
		"vni=1/date=2026-11-25/hour=15/b.idx.json":   []byte(`{}`),
		"vni=22/date=2026-11-26/hour=00/c.idx.json":  []byte(`{}`),
		"rejected/0001.bin":                          {},
	}
	for k, v := range objs {
		if err := s.Put(ctx, k, v); err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
	}
	// Overwrite: the same key rewritten holds the new content.
	if err := s.Put(ctx, "vni=1/date=2026-11-25/hour=14/a.idx.json", []byte(`{"x":2}`)); err != nil {
		t.Fatal(err)
	}
	objs["vni=1/date=2026-11-25/hour=14/a.idx.json"] = []byte(`{"x":2}`)
	for k, v := range objs {
		got, err := s.Get(ctx, k)
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Get %s: %d bytes, %v", k, len(got), err)
		}
	}
	off := int64(big/2 - 3)
	r, err := s.GetRange(ctx, "vni=1/date=2026-11-25/hour=14/a.pcapng.zst", off, 1000)
	if err != nil || !bytes.Equal(r, large[off:off+1000]) {
		t.Fatalf("GetRange: %v", err)
	}
	if _, err := s.Get(ctx, "vni=1/nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: %v, want ErrNotFound", err)
	}
	if _, err := s.GetRange(ctx, "vni=1/nope", 0, 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRange missing: %v, want ErrNotFound", err)
	}
	keys, err := s.List(ctx, "vni=1/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"vni=1/date=2026-11-25/hour=14/a.idx.json", "vni=1/date=2026-11-25/hour=14/a.pcapng.zst", "vni=1/date=2026-11-25/hour=15/b.idx.json"}
	if !slices.Equal(keys, want) {
		t.Fatalf("List = %v, want %v", keys, want)
	}
	dirs, err := s.Dirs(ctx, "")
	if err != nil || !slices.Equal(dirs, []string{"rejected", "vni=1", "vni=22"}) {
		t.Fatalf("Dirs(\"\") = %v, %v", dirs, err)
	}
	dirs, err = s.Dirs(ctx, "vni=1/date=2026-11-25/")
	if err != nil || !slices.Equal(dirs, []string{"hour=14", "hour=15"}) {
		t.Fatalf("Dirs = %v, %v", dirs, err)
	}
	if dirs, err := s.Dirs(ctx, "vni=9/"); err != nil || len(dirs) != 0 {
		t.Fatalf("Dirs of nothing = %v, %v", dirs, err)
	}
}
