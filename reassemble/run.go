// Package reassemble is Tapline's reassembly stage: it consumes the frame
// batches of TAPLINE_FRAMES, reassembles the TCP connections in them
// (package tcp), decodes their messages (package message) and publishes
// message chunks and connection events to TAPLINE_MSGS.
//
// Each shard has one durable pull consumer with a pinned priority group:
// the server delivers a shard's batches to one instance at a time and
// moves the shard to another instance when its owner stops pulling. See
// README.md for the flags, the loss accounting and the failover
// semantics.
package reassemble

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tlsdec"
)

// engine is what the shard workers share.
type engine struct {
	cfg        Config
	log        *slog.Logger
	m          *metrics
	nc         *nats.Conn
	js         jetstream.JetStream
	newDecoder DecoderFunc
	limits     message.Limits
	keys       *tlsdec.KeyStore   // nil: TLS is not decrypted (--tls=false)
	kv         jetstream.KeyValue // records of closed connections (done.go); nil with --max-held-batches 0

	crashOnStop bool // tests: stop without handing the shards over

	drain *stage.Drain // what a stop waits for (may be nil)

	consumers atomic.Int32 // shards whose consumer was created (the "consumers" check)
}

// Run consumes the configured shards until ctx ends, then hands each shard
// over (see README.md) and returns nil.
func Run(ctx context.Context, cfg Config, d stage.Deps) error {
	// Every check /healthz needs, failing until registered: connected to
	// NATS is not healthy while the streams are being provisioned or a
	// shard's consumer does not exist yet.
	d.Health.Expect("nats", "streams", "consumers")
	if err := cfg.Validate(); err != nil {
		return err
	}
	shards, _ := cfg.shards()
	newDec := cfg.NewDecoder
	if newDec == nil {
		newDec = defaultDecoder
	}
	if newDec == nil {
		return errors.New("no message decoder available")
	}
	m, err := newMetrics(d.Metrics)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	nc, _, err := cfg.Common.Connect(ctx, "tapline-reassemble "+cfg.InstanceID, d.Log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := proto.CheckMaxPayload(nc.MaxPayload()); err != nil {
		return stage.ConfigError(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second), jetstream.WithPublishAsyncMaxPending(4*cfg.MaxInflight*len(shards)+64))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	d.Health.Add("nats", stage.NATSCheck(nc))
	names := []string{proto.FramesStream, proto.MsgsStream, proto.EventsStream}
	if cfg.TLS {
		names = append(names, proto.KeysStream)
	}
	if err := stage.ProvisionStreams(ctx, d, js, cfg.Common.Streams, names...); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	e := &engine{cfg: cfg, log: d.Log, m: m, nc: nc, js: js, newDecoder: newDec,
		limits:      message.Limits{MaxHeader: cfg.MaxHeader, MaxControl: 125, MaxMessage: cfg.MaxMessage, MaxInflation: cfg.MaxInflation},
		crashOnStop: cfg.crashOnStop, drain: d.Drain}
	if cfg.MaxHeldBatches > 0 {
		pctx, cancel := context.WithTimeout(ctx, proto.ProvisionTimeout(cfg.Common.Streams.Replicas))
		e.kv, err = openDoneBucket(pctx, js, cfg)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while starting
			}
			return fmt.Errorf("bucket %s: %w", doneBucket, err)
		}
	}
	d.Health.Add("consumers", func() error {
		if n := int(e.consumers.Load()); n < len(shards) {
			return fmt.Errorf("%d of %d shard consumers created", n, len(shards))
		}
		return nil
	})
	var wg sync.WaitGroup
	if cfg.TLS {
		e.keys = tlsdec.NewKeyStore(cfg.TLSMaxKeys, cfg.TLSKeyMaxAge)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.consumeKeys(ctx)
		}()
	}
	d.Log.Info("reassembling", "instance", cfg.InstanceID, "shards", len(shards), "tls", cfg.TLS, "keep_credentials", cfg.KeepCredentials, "max_inflation_ratio", cfg.MaxInflation)
	for _, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			newWorker(e, s).run(ctx)
		}()
	}
	wg.Wait()
	if !cfg.crashOnStop {
		_ = nc.FlushTimeout(5 * time.Second)
	}
	return nil
}

// ownershipEvent reports on TAPLINE_EVENTS that this instance started or
// stopped receiving a shard.
func (e *engine) ownershipEvent(shard int, what string) {
	body, _ := json.Marshal(map[string]any{"instance": e.cfg.InstanceID, "shard": shard, "event": what, "at": time.Now().UTC()})
	m := nats.NewMsg(proto.EventsSubject("reassemble", "ownership"))
	m.Header.Set(proto.HdrVersion, proto.Version)
	m.Data = body
	_, _ = e.js.PublishMsgAsync(m)
}
