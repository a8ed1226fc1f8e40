package reassemble

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// restartFixture is a shard whose only instance dies (kill -9: nothing
// acknowledged on the way out) and a new process takes over: a JetStream
// server, a collector of TAPLINE_MSGS, the first instance's Config, a
// synthetic capture clock, and the frame batches the test publishes on
// tapline.frames.7.0.
type restartFixture struct {
	t       *testing.T
	js      jetstream.JetStream
	col     *collector
	cfg     Config // the first instance: crashes on stop
	clock   int64
	batches [][]byte
	idBase  string // Msg-Ids are <idBase>-<index>
}

// newRestartFixture starts the server and the collector. The first
// instance holds up to maxHeld batches; its pin on the shard lasts
// pinnedTTL and its unacknowledged batches come back after ackWait.
func newRestartFixture(t *testing.T, idBase string, maxHeld int, pinnedTTL, ackWait time.Duration) *restartFixture {
	t.Helper()
	_, url := natstestRun(t)
	_, js := connect(t, url)
	f := &restartFixture{t: t, js: js, col: collect(t, js), cfg: recoveryConfig(url), idBase: idBase,
		clock: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).UnixNano()}
	f.cfg.InstanceID = "before-restart"
	f.cfg.MaxHeldBatches = maxHeld
	f.cfg.crashOnStop = true
	f.cfg.PinnedTTL, f.cfg.AckWait = pinnedTTL, ackWait
	return f
}

// pub publishes batch i (an error fails the test; safe from any
// goroutine).
func (f *restartFixture) pub(i int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.js.Publish(ctx, proto.FramesSubject(7, 0), f.batches[i], jetstream.WithMsgID(fmt.Sprintf("%s-%d", f.idBase, i))); err != nil {
		f.t.Error(err)
	}
}

// restarted is the Config of the process that starts after the crash.
func (f *restartFixture) restarted() Config {
	c := f.cfg
	c.InstanceID = "after-restart"
	c.crashOnStop = false
	return c
}
