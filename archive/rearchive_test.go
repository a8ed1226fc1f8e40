package archive

import (
	"context"
	"testing"
	"time"

	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

// TestEverythingRedelivered: the consumer's acknowledgements are lost (a
// NATS server killed before it wrote its consumer state back), so every
// batch the archive stored is delivered again, to an archive restarted
// with other chunk sizes: the second pass cuts its chunks differently,
// so they overlap the first pass's partly, also across an hour boundary,
// while new batches keep coming. Queries return every frame exactly once.
func TestEverythingRedelivered(t *testing.T) {
	dir := t.TempDir()
	_, url := natstest.Run(t)
	_, js := connect(t, url)
	t0 := time.Date(2026, 11, 25, 10, 59, 58, 0, time.UTC).UnixNano() // spans an hour boundary
	in := synth(6000, t0, int64(time.Millisecond/2), 9, 8, 4, 200)
	half := len(in) / 2
	publish(t, js, in[:half], 16)
	cfg := testConfig(url, dir)
	cfg.ChunkBytes = 128 << 10
	stop, _ := runArchive(t, cfg)
	waitAcked(t, js, cfg.Consumer)
	stop()

	// The acknowledgements are gone: the consumer starts over.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteConsumer(ctx, proto.FramesStream, cfg.Consumer); err != nil {
		t.Fatal(err)
	}
	cfg2 := cfg
	cfg2.ChunkBytes = 96 << 10
	cfg2.FrameBytes = 4 << 10
	stop2, _, reg := runArchiveReg(t, cfg2)
	publish(t, js, in[half:], 16)
	waitAcked(t, js, cfg2.Consumer)
	stop2()
	if n := counter(t, reg, "tapline_archive_batches_total"); n == 0 {
		t.Fatal("the second archive stored nothing")
	}
	st, _ := store.Open(context.Background(), dir, store.S3Options{})
	out, res := queryStore(t, st, query.Filter{})
	t.Logf("%d packets, %d duplicates dropped", res.Packets, res.Duplicates)
	if res.Duplicates == 0 {
		t.Errorf("no duplicate dropped: the second pass did not overlap the first")
	}
	sameFrames(t, decodeAll(t, out), frames(in))
}
