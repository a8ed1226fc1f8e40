package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// ReadStream reads the whole of TAPLINE_MSGS as it is now into a Stream
// (bodies are hashed, not kept).
func ReadStream(ctx context.Context, js jetstream.JetStream) (*Stream, error) {
	s := NewStream()
	err := readAll(ctx, js, proto.MsgsStream, func(m jetstream.Msg, seq uint64) error {
		_ = s.Add(nats.Header(m.Headers()), m.Data(), seq)
		return nil
	})
	return s, err
}

// ReadResults reads the whole of TAPLINE_RESULTS as it is now.
func ReadResults(ctx context.Context, js jetstream.JetStream) (*Results, error) {
	r := NewResults()
	err := readAll(ctx, js, proto.ResultsStream, func(m jetstream.Msg, seq uint64) error {
		if err := r.AddResult(m.Data()); err != nil {
			return fmt.Errorf("%s seq %d: %w", proto.ResultsStream, seq, err)
		}
		return nil
	})
	return r, err
}

// readAll hands every message of a stream, up to its last sequence at the
// start, to fn in order.
func readAll(ctx context.Context, js jetstream.JetStream, name string, fn func(jetstream.Msg, uint64) error) error {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("ledger: %s: %w", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("ledger: %s: %w", name, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("ledger: %s: %w", name, err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(16 << 20))
	if err != nil {
		return fmt.Errorf("ledger: %s: %w", name, err)
	}
	defer func() {
		// Stopping does not delete the consumer: do, so that `tapline
		// ledger` leaves nothing on the server.
		it.Stop()
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = st.DeleteConsumer(dctx, ci.Name)
			cancel()
		}
	}()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("ledger: %s: %w", name, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("ledger: %s: %w", name, err)
		}
		if err := fn(m, md.Sequence.Stream); err != nil {
			return err
		}
		if md.Sequence.Stream >= last {
			return nil
		}
	}
}
