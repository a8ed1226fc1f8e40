package reassemble

import (
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// permanent reports whether a publish error will not go away by sending
// again: the entry is larger than the server or the stream accepts.
func permanent(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// logFailure reports a failed publish before it is sent again: a warning,
// or an error when sending again cannot help (it names the cause; the
// shard stays stalled until the configuration is fixed).
func (p *publisher) logFailure(err error) {
	args := []any{"queued", len(p.q), "subject", p.q[0].msg.Subject, "bytes", len(p.q[0].msg.Data)}
	if err != nil {
		args = append(args, "err", err)
	}
	if permanent(err) {
		p.log.Error("publish refused: the entry is larger than the NATS server or the messages stream accepts; the shard is stalled until max_payload or the stream's max_msg_size is raised", args...)
		return
	}
	p.log.Warn("publish failed; resending unacknowledged entries in order", args...)
}
