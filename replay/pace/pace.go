// Package pace decides when replay may deliver a message: at the original
// inter-message timing (optionally sped up or slowed down), as fast as
// possible, and never faster than the configured message and byte rates.
package pace

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Mode is the pacing mode.
type Mode string

// Pacing modes.
const (
	Original Mode = "original" // keep the original gaps between messages (scaled by Speed)
	Fast     Mode = "fast"     // no waiting beyond the rate caps
)

// ParseMode validates a --pace value.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case Original, Fast:
		return Mode(s), nil
	}
	return "", fmt.Errorf("--pace must be original or fast, got %q", s)
}

// Config configures a Pacer.
type Config struct {
	Mode      Mode
	Speed     float64 // factor applied to the original gaps: 2 = twice as fast; <= 0 means 1
	RateMsgs  float64 // messages per second, 0 = unlimited
	RateBytes float64 // payload bytes per second, 0 = unlimited
}

// Pacer is shared by every connection so the relative timing between
// connections is kept too. The zero value is not usable; use New.
type Pacer struct {
	cfg   Config
	msgs  *rate.Limiter
	bytes *rate.Limiter
	burst int

	mu         sync.Mutex
	anchored   bool
	anchorWall time.Time
	anchorNs   int64

	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// New returns a Pacer for cfg.
func New(cfg Config) *Pacer {
	if cfg.Speed <= 0 {
		cfg.Speed = 1
	}
	p := &Pacer{cfg: cfg, now: time.Now, sleep: sleepCtx}
	if cfg.RateMsgs > 0 {
		p.msgs = rate.NewLimiter(rate.Limit(cfg.RateMsgs), max(1, int(math.Ceil(cfg.RateMsgs/100))))
	}
	if cfg.RateBytes > 0 {
		p.burst = max(64<<10, int(cfg.RateBytes/20))
		p.bytes = rate.NewLimiter(rate.Limit(cfg.RateBytes), p.burst)
	}
	return p
}

// Due returns when a message first captured at firstNs is due, anchoring
// the timeline at the first message asked about. In Fast mode it is now.
func (p *Pacer) Due(firstNs int64) time.Time {
	now := p.now()
	if p.cfg.Mode != Original || firstNs <= 0 {
		return now
	}
	p.mu.Lock()
	if !p.anchored {
		p.anchored, p.anchorWall, p.anchorNs = true, now, firstNs
	}
	wall, ns := p.anchorWall, p.anchorNs
	p.mu.Unlock()
	off := float64(firstNs-ns) / p.cfg.Speed
	if off <= 0 {
		return wall
	}
	return wall.Add(time.Duration(off))
}

// WaitMessage blocks until a message first captured at firstNs may start:
// its original time is due and the message rate allows one more.
func (p *Pacer) WaitMessage(ctx context.Context, firstNs int64) error {
	if d := p.Due(firstNs).Sub(p.now()); d > 0 {
		if err := p.sleep(ctx, d); err != nil {
			return err
		}
	}
	if p.msgs != nil {
		return p.msgs.Wait(ctx)
	}
	return nil
}

// WaitBytes blocks until n more payload bytes may be sent.
func (p *Pacer) WaitBytes(ctx context.Context, n int) error {
	if p.bytes == nil {
		return nil
	}
	for n > 0 {
		k := min(n, p.burst)
		if err := p.bytes.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
