package views

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Read says what part of a stream to read.
type Read struct {
	Stream string
	Filter string    // subject filter; empty: the whole stream
	Since  time.Time // first message at or after this time; zero: from StartSeq
	// StartSeq is the first stream sequence to read (with Since zero);
	// 0 means the first message the stream holds.
	StartSeq uint64
	// Follow keeps reading what arrives after the stream's last message
	// at the start, until ctx ends.
	Follow bool
}

// ErrNoStream is returned (wrapped) by Each when the stream does not exist.
var ErrNoStream = errors.New("no such stream")

// Each hands every message of r to fn in stream order, from an ordered
// consumer (ephemeral, in memory: nothing is left on the server). When the
// messages the stream held at the start are done it calls caughtUp (if
// not nil) and returns, or with r.Follow goes on until ctx ends (then it
// returns nil).
func Each(ctx context.Context, js jetstream.JetStream, r Read, fn func(jetstream.Msg, *jetstream.MsgMetadata) error, caughtUp func()) error {
	st, err := js.Stream(ctx, r.Stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%s: %w", r.Stream, ErrNoStream)
		}
		return fmt.Errorf("%s: %w", r.Stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Stream, err)
	}
	// A consumer left by a killed process goes away after 30 s.
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 30 * time.Second}
	if r.Filter != "" {
		cfg.FilterSubjects = []string{r.Filter}
	}
	probe := jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, FilterSubject: r.Filter}
	switch {
	case !r.Since.IsZero():
		since := r.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
		probe.DeliverPolicy, probe.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	case r.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.StartSeq
		probe.DeliverPolicy, probe.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.StartSeq
	}
	// How many messages are there to catch up with?
	pending := uint64(0)
	if info.State.Msgs > 0 {
		if pending, err = pendingFrom(ctx, st, probe); err != nil {
			return fmt.Errorf("%s: %w", r.Stream, err)
		}
	}
	last := info.State.LastSeq
	if pending == 0 {
		if caughtUp != nil {
			caughtUp()
		}
		if !r.Follow {
			return nil
		}
		// Only what comes next.
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, nil
		cfg.OptStartSeq = last + 1
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(8 << 20))
	if err != nil {
		return fmt.Errorf("%s: %w", r.Stream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer func() {
		// Stopping does not delete the consumer: do, so that nothing is
		// left on the server.
		it.Stop()
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = st.DeleteConsumer(dctx, ci.Name)
			cancel()
		}
	}()
	behind := pending > 0
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: %w", r.Stream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("%s: %w", r.Stream, err)
		}
		if err := fn(m, md); err != nil {
			return err
		}
		if behind && (md.Sequence.Stream >= last || md.NumPending == 0) {
			behind = false
			if caughtUp != nil {
				caughtUp()
			}
			if !r.Follow {
				return nil
			}
		}
	}
}

// pendingFrom is how many messages a consumer with cfg would deliver now:
// it creates an ephemeral consumer in memory, reads its info and deletes
// it.
func pendingFrom(ctx context.Context, st jetstream.Stream, cfg jetstream.ConsumerConfig) (uint64, error) {
	cfg.AckPolicy = jetstream.AckNonePolicy
	cfg.MemoryStorage = true
	cfg.InactiveThreshold = 30 * time.Second
	c, err := st.CreateConsumer(ctx, cfg)
	if err != nil {
		return 0, err
	}
	ci := c.CachedInfo()
	_ = st.DeleteConsumer(context.WithoutCancel(ctx), ci.Name)
	return ci.NumPending, nil
}

// StartOfLast returns the stream sequence from which the last n messages
// matching filter begin (0 when the stream holds n or fewer), by binary
// search over ephemeral consumers' pending counts.
func StartOfLast(ctx context.Context, js jetstream.JetStream, stream, filter string, n uint64) (uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", stream, err)
	}
	pend := func(seq uint64) (uint64, error) {
		return pendingFrom(ctx, st, jetstream.ConsumerConfig{FilterSubject: filter,
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq})
	}
	lo, hi := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return hi + 1, nil
	}
	if p, err := pend(lo); err != nil || p <= n {
		return 0, err
	}
	// Invariant: pend(lo) > n; find the smallest seq with pend(seq) <= n.
	hi++
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		p, err := pend(mid)
		if err != nil {
			return 0, err
		}
		if p > n {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi, nil
}
