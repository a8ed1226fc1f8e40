package publish

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// errCodeDuplicateInProcess is JetStream's "duplicate message id is in
// process" (409): a publish with the same Nats-Msg-Id is still being
// stored, typically the first attempt of a batch retried across a leader
// change. The batch is not refused: it may yet be stored by that attempt,
// or not, so it is sent again until JetStream answers for it.
const errCodeDuplicateInProcess = 10158

// transientAPICodes are JetStream errors a later attempt can overcome: the
// cluster or the stream is busy electing, catching up or offline.
var transientAPICodes = map[jetstream.ErrorCode]bool{
	errCodeDuplicateInProcess: true,
	10008:                     true, // JetStream system temporarily unavailable
	10009:                     true, // JetStream cluster can not handle request (not leader)
	10118:                     true, // stream is offline
}

// rejectedForGood reports whether err refuses the batch for good (too
// large, sealed stream …): it is then dropped and counted as rejected.
// Timeouts, disconnections and the transient JetStream errors above are
// retried instead: dropping a batch the stream may still take would be
// loss Tapline caused itself.
func rejectedForGood(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	if apiErr.Code >= 500 || transientAPICodes[apiErr.ErrorCode] {
		return false
	}
	return true
}
