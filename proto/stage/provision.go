package stage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// ProvisionStreams provisions the named streams (proto.ProvisionStreams)
// and returns once every one exists and answered through its leader, or
// ctx ends. Until then d.Health fails its "streams" check, so /healthz (an
// NLB target group's health check) says the stage cannot work yet.
//
// It says so in one line while waiting (and again every minute), retries
// every attempt that failed, and doubles the per-attempt timeout after
// each one that timed out, from proto.ProvisionTimeout(replicas) up to
// proto.MaxProvisionTimeout: R3 creation and leader elections take what
// the cluster takes. An unanswered request is never taken for a missing
// stream. Existing streams with other settings are kept and each
// difference is logged as a warning naming --update-streams, unless that
// flag asked for them to be changed.
func ProvisionStreams(ctx context.Context, d Deps, js jetstream.JetStream, o proto.StreamOptions, names ...string) error {
	p := &provisioning{names: strings.Join(names, ", ")}
	d.Health.Add("streams", p.check)
	timeout := proto.ProvisionTimeout(o.Replicas)
	start := time.Now()
	var lastLog time.Time
	var logMu sync.Mutex
	// waiting says, once a minute at most, that the stage waits.
	waiting := func(attempt int, err error) {
		logMu.Lock()
		defer logMu.Unlock()
		if time.Since(lastLog) < time.Minute {
			return
		}
		lastLog = time.Now()
		args := []any{"streams", p.names, "attempt", attempt, "attempt_timeout", timeout, "waited", time.Since(start).Round(time.Second)}
		if err != nil {
			args = append(args, "err", err)
		}
		d.Log.Warn("waiting for JetStream streams; not healthy until they accept publishes", args...)
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		// An attempt that takes more than a moment is worth one line.
		slow := time.AfterFunc(slowAttempt, func() { waiting(attempt, nil) })
		sts, err := proto.ProvisionStreams(actx, js, o, names...)
		slow.Stop()
		cancel()
		if err == nil {
			for _, st := range sts {
				logStatus(d, st)
			}
			p.set(nil)
			if time.Since(start) >= slowAttempt {
				d.Log.Info("streams ready", "streams", p.names, "after", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("stopped before the streams were ready: %w", err)
		}
		p.set(err)
		waiting(attempt, err)
		if errors.Is(err, context.DeadlineExceeded) {
			timeout = min(2*timeout, proto.MaxProvisionTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped before the streams were ready: %w", err)
		case <-time.After(min(time.Duration(attempt)*250*time.Millisecond, 5*time.Second)):
		}
	}
}

// slowAttempt is how long a provisioning attempt runs before the stage
// says it is waiting.
const slowAttempt = 2 * time.Second

func logStatus(d Deps, st proto.StreamStatus) {
	switch {
	case st.Created:
		d.Log.Info("stream created", "stream", st.Name, "replicas", st.Replicas, "leader", st.Leader)
	case st.Updated:
		d.Log.Warn("stream changed to this stage's settings (--update-streams)", "stream", st.Name, "changed", strings.Join(st.Diffs, "; "))
	case len(st.Diffs) > 0:
		d.Log.Warn("stream exists with other settings; kept as it is (--update-streams changes it)", "stream", st.Name, "differences", strings.Join(st.Diffs, "; "))
	}
}

// provisioning is the state behind the "streams" health check.
type provisioning struct {
	names string
	mu    sync.Mutex
	done  bool
	err   error
}

func (p *provisioning) set(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.err = err == nil, err
}

func (p *provisioning) check() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.done:
		return nil
	case p.err != nil:
		return fmt.Errorf("streams %s not ready: %v", p.names, p.err)
	}
	return fmt.Errorf("streams %s not provisioned yet", p.names)
}
