package decap

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// reprovision is called when a publish found no stream to answer it.
func (e *engine) reprovision(js jetstream.JetStream) { Reprovision(js, e.cfg.Common.Streams, e.d.Log) }

// Reprovision provisions TAPLINE_FRAMES and TAPLINE_EVENTS again if
// JetStream answers that TAPLINE_FRAMES does not exist: what a deleted
// stream looks like. A publish that finds no stream may also mean a stream
// leader election, a node or route going down: then nothing is done, the
// publisher retries the batch. decap calls it when a publish found no
// stream, `decap capture` when uploads keep failing.
func Reprovision(js jetstream.JetStream, o proto.StreamOptions, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), proto.ProvisionTimeout(o.Replicas))
	defer cancel()
	_, err := js.Stream(ctx, proto.FramesStream)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		if err != nil {
			log.Debug("stream did not answer (leader election or node down?); publishes are retried", "stream", proto.FramesStream, "err", err)
		}
		return
	}
	if _, err := proto.ProvisionStreams(ctx, js, o, proto.FramesStream, proto.EventsStream); err != nil {
		log.Warn("JetStream says TAPLINE_FRAMES does not exist; provisioning it again failed", "err", err)
		return
	}
	log.Warn("JetStream said TAPLINE_FRAMES did not exist (deleted?): streams provisioned again")
}
