package reassemble

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// chunkRoom is the largest entry the stage publishes: a full chunk plus
// its headers (the messages stream's MaxMsgSize).
const chunkRoom = proto.MaxChunk + 64<<10

// checkMaxPayload refuses a NATS server whose max_payload cannot carry a
// full message chunk: every message of 1 MiB or more would fail to
// publish, forever, and stall its shard.
func checkMaxPayload(maxPayload int64) error {
	if maxPayload > 0 && maxPayload < chunkRoom {
		return fmt.Errorf("the NATS server's max_payload is %d bytes, less than a full message chunk (%d bytes with headers): set max_payload to at least 2MB (deploy/nats/nats.conf uses 8MB)", maxPayload, chunkRoom)
	}
	return nil
}

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
