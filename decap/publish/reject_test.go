package publish

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRejectedForGood: only refusals a retry cannot overcome drop a batch.
// "Duplicate message id is in process" came back for retried batches
// after a stream leader change in a 3-node cluster, and dropping them lost
// the one batch whose first attempt had not been stored.
func TestRejectedForGood(t *testing.T) {
	for _, tc := range []struct {
		err  error
		good bool
	}{
		{&jetstream.APIError{Code: 409, ErrorCode: errCodeDuplicateInProcess, Description: "duplicate message id is in process"}, false},
		{fmt.Errorf("publish: %w", &jetstream.APIError{Code: 409, ErrorCode: errCodeDuplicateInProcess}), false},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, false},
		{&jetstream.APIError{Code: 500, ErrorCode: 10009}, false},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum, Description: "message size exceeds maximum allowed"}, true},
		{nats.ErrTimeout, false},
		{errors.New("nats: server is disconnected"), false},
	} {
		if got := rejectedForGood(tc.err); got != tc.good {
			t.Errorf("rejectedForGood(%v) = %v, want %v", tc.err, got, tc.good)
		}
	}
}
