package stage

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Drain records what a stopping stage still waits for (open chunks to
// store, publishes to confirm, stages still running), so that a slow stop
// says why instead of being silent. The zero value is ready; a nil *Drain
// records nothing.
type Drain struct {
	mu    sync.Mutex
	next  int
	waits map[int]string
}

// Begin records that the stage waits for what, until the returned done is
// called.
func (d *Drain) Begin(what string) (done func()) {
	if d == nil {
		return func() {}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.waits == nil {
		d.waits = map[int]string{}
	}
	id := d.next
	d.next++
	d.waits[id] = what
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			delete(d.waits, id)
		})
	}
}

// Waiting lists what is being waited for, sorted.
func (d *Drain) Waiting() []string {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.waits))
	for _, w := range d.waits {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

// slowStopInterval is how often a stop that has not finished says what it
// waits for.
var slowStopInterval = 5 * time.Second

// reportSlowStop logs, every slowStopInterval from when ctx ends until
// stopped is closed, what d still waits for.
func reportSlowStop(ctx context.Context, stopped <-chan struct{}, d *Drain, log *slog.Logger) {
	select {
	case <-ctx.Done():
	case <-stopped:
		return
	}
	start := time.Now()
	t := time.NewTicker(slowStopInterval)
	defer t.Stop()
	for {
		select {
		case <-stopped:
			return
		case <-t.C:
			waiting := d.Waiting()
			if len(waiting) == 0 {
				waiting = []string{"the stage to finish its drain"}
			}
			log.Warn("still stopping; a second interrupt exits now", "elapsed", time.Since(start).Round(time.Second), "waiting_for", waiting)
		}
	}
}
