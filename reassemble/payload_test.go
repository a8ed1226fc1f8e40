package reassemble

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// TestMaxPayloadTooSmall: a NATS server whose max_payload (512 KiB here)
// cannot take a full message chunk with its headers would refuse every
// message of a chunk or more, forever. The stage must
// say so — refuse to run, naming max_payload — rather than start and retry
// those publishes silently while the shard stalls.
func TestMaxPayloadTooSmall(t *testing.T) {
	srv, err := natstest.Start(natstest.Options{StoreDir: t.TempDir(), MaxPayload: 512 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := srv.ClientURL()
	_, js := connect(t, url)

	cfg := recoveryConfig(url)
	cfg.NewDecoder = nil // the WebSocket decoder
	clock := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(t, "10.2.0.1:40018", "10.2.0.2:443", 7, &clock)
	s2c := wsFrame(2, pattern(3<<20, 9), false)
	batches := [][]byte{
		frameBatch(t, c.frame(true, "S", nil), c.frame(false, "SA", nil)),
		frameBatch(t, c.frame(true, "PA", []byte(upgradeReq)), c.frame(false, "PA", []byte(upgradeResp))),
	}
	for off := 0; off < len(s2c); off += 8000 {
		batches = append(batches, frameBatch(t, c.frame(false, "PA", s2c[off:min(off+8000, len(s2c))])))
	}
	batches = append(batches, frameBatch(t, c.frame(false, "FA", nil), c.frame(true, "FA", nil)))
	d, _ := stage.TestDeps("reassemble")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, d) }()
	for i, b := range batches {
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := js.Publish(pctx, proto.FramesSubject(7, 0), b, jetstream.WithMsgID(fmt.Sprintf("payload-%d", i)))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "max_payload") {
			t.Fatalf("Run: %v, want an error naming max_payload", err)
		}
		t.Logf("Run: %v", err)
	case <-time.After(60 * time.Second):
		stop()
		err := <-done
		st, serr := js.Stream(context.Background(), proto.MsgsStream)
		var n uint64
		if serr == nil {
			if info, ierr := st.Info(context.Background()); ierr == nil {
				n = info.State.Msgs
			}
		}
		t.Fatalf("Run kept running (returned %v at stop, %v) with a max_payload too small for a chunk; the messages stream holds %d entries",
			err, errors.Join(serr), n)
	}
}

// TestPermanentPublishErrors: the errors a real server gives an entry
// larger than it or the stream accepts are classified as permanent (logged
// as errors naming the cause, not as a transient warning).
func TestPermanentPublishErrors(t *testing.T) {
	_, url := natstestRun(t)
	nc, js := connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 1024}); err != nil {
		t.Fatal(err)
	}
	f, err := js.PublishAsync("small.x", make([]byte, 4096))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Ok():
		t.Fatal("a 4 KiB entry stored in a stream of 1 KiB messages")
	case err := <-f.Err():
		if !permanent(err) {
			t.Errorf("stream max_msg_size exceeded: %v (%T) not permanent", err, err)
		}
	case <-ctx.Done():
		t.Fatal("no publish acknowledgement")
	}
	_, err = js.PublishAsync("small.y", make([]byte, nc.MaxPayload()+1))
	if !permanent(err) {
		t.Errorf("max_payload exceeded: %v not permanent", err)
	}
	if permanent(errors.New("nats: timeout")) || permanent(nats.ErrNoResponders) {
		t.Error("transient errors classified as permanent")
	}
}
