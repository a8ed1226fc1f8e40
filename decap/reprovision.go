package decap

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// reprovision is called when a publish found no stream to answer it. That
// is what a deleted stream looks like, but also a stream leader election,
// a node or route going down: the streams are provisioned again only when
// JetStream answers that TAPLINE_FRAMES does not exist. Anything else is
// left to the publisher, which retries the batch.
func (e *engine) reprovision(js jetstream.JetStream) {
	o := e.cfg.Common.Streams
	ctx, cancel := context.WithTimeout(context.Background(), proto.ProvisionTimeout(o.Replicas))
	defer cancel()
	_, err := js.Stream(ctx, proto.FramesStream)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		if err != nil {
			e.d.Log.Debug("stream did not answer (leader election or node down?); publishes are retried", "stream", proto.FramesStream, "err", err)
		}
		return
	}
	if _, err := proto.ProvisionStreams(ctx, js, o, proto.FramesStream, proto.EventsStream); err != nil {
		e.d.Log.Warn("JetStream says TAPLINE_FRAMES does not exist; provisioning it again failed", "err", err)
		return
	}
	e.d.Log.Warn("JetStream said TAPLINE_FRAMES did not exist (deleted?): streams provisioned again")
}
