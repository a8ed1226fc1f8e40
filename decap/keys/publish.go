package keys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
)

// errNotConnected is the last error while the NATS connection is down.
var errNotConnected = errors.New("not connected")

// publisher stores batches in TAPLINE_KEYS one at a time, in order, each
// retried with the same message id until JetStream acknowledges it.
type publisher struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	subject string
	log     *slog.Logger
	m       *metrics

	// stall, when positive, bounds how long nothing may be stored before
	// the publisher gives up (without --follow).
	stall    time.Duration
	progress time.Time

	read, stored atomic.Int64 // key lines handed to the publisher, and stored
}

// stalled returns the error that ends a run without --follow when nothing
// was stored for p.stall, or nil.
func (p *publisher) stalled(what string, last error) error {
	if p.stall <= 0 || time.Since(p.progress) < p.stall {
		return nil
	}
	at := redactURLs(p.cfg.Common.NATSURL)
	if errors.Is(last, errNotConnected) {
		return fmt.Errorf("NATS at %s unreachable: %s made no progress for %s (%d of %d key lines stored)",
			at, what, p.stall, p.stored.Load(), p.read.Load())
	}
	return fmt.Errorf("NATS at %s: %s made no progress for %s (%d of %d key lines stored): %v",
		at, what, p.stall, p.stored.Load(), p.read.Load(), last)
}

// redactURLs removes user info from comma-separated NATS URLs.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, s := range parts {
		if u, err := url.Parse(strings.TrimSpace(s)); err == nil && u.User != nil {
			u.User = url.User("REDACTED")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// retry runs op until it succeeds, ctx ends, or the publisher stalls.
func (p *publisher) retry(ctx context.Context, what string, op func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	var last error
	warned := false
	for {
		if p.nc.IsConnected() {
			actx, cancel := context.WithTimeout(ctx, p.cfg.AckTimeout)
			last = op(actx)
			cancel()
			if last == nil {
				p.progress = time.Now()
				if warned {
					p.log.Info(what + " succeeded after retries")
				}
				return nil
			}
			p.m.pubErrors.Inc()
		} else {
			last = errNotConnected
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.stalled(what, last); err != nil {
			return err
		}
		if !warned {
			p.log.Warn(what+" failed, retrying", "err", last)
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// provision creates TAPLINE_KEYS, or keeps it and warns about settings
// that differ (stage.ProvisionStreams, which also drives the "streams"
// health check). Without --follow it gives up after --timeout, like a
// publish.
func (p *publisher) provision(ctx context.Context, d stage.Deps) error {
	pctx := ctx
	if p.stall > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, p.stall)
		defer cancel()
	}
	err := stage.ProvisionStreams(pctx, d, p.js, p.cfg.Common.Streams, proto.KeysStream)
	if err == nil {
		p.progress = time.Now()
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	last := err
	if !p.nc.IsConnected() {
		last = errNotConnected
	}
	if serr := p.stalled("provisioning "+proto.KeysStream, last); serr != nil {
		return serr
	}
	return err
}

// run publishes the batches of in until it is closed, or ctx ends.
func (p *publisher) run(ctx context.Context, in <-chan *batch) error {
	for {
		var b *batch
		var ok bool
		select {
		case b, ok = <-in:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return nil
		}
		if err := p.publish(ctx, b); err != nil {
			return err
		}
	}
}

func (p *publisher) publish(ctx context.Context, b *batch) error {
	msg := &nats.Msg{Subject: p.subject, Data: b.data}
	err := p.retry(ctx, "publishing key lines", func(ctx context.Context) error {
		ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(b.id), jetstream.WithExpectStream(proto.KeysStream))
		if err != nil {
			return err
		}
		if ack.Duplicate {
			p.m.duplicates.Inc()
		}
		return nil
	})
	if err != nil {
		return err
	}
	p.m.buffered.Sub(float64(len(b.data)))
	p.m.published.Add(float64(b.lines))
	p.m.messages.Inc()
	p.stored.Add(int64(b.lines))
	return nil
}
