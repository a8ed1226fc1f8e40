package replay

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// openLedger remembers, per connection being replayed, the stream sequence
// of its open event, in a JetStream key-value bucket of the durable
// (TAPLINE_REPLAY_OPENS_<durable>). A worker that sees a connection's
// entries without its open event first — the open was acknowledged when
// the connection idled out, or a restarted replay gets redeliveries out of
// order — recovers the open event from the stream, so the connection is
// replayed with its path and headers instead of being filtered as started
// before replay. The key is deleted when the connection ends.
type openLedger struct {
	kv jetstream.KeyValue
}

// openLedgerTTL bounds what a crashed replay may leave in the bucket.
const openLedgerTTL = 7 * 24 * time.Hour

// openBucket is the bucket name of a durable.
func openBucket(durable string) string {
	b := []byte("TAPLINE_REPLAY_OPENS_" + durable)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// newOpenLedger opens the durable's ledger bucket, creating it when
// missing. The bucket has the streams' replicas: an R1 bucket on a cluster lived on
// one node, and with that node down every delivery-mark write failed
// ("no response from stream") and replay stopped delivering until it came
// back.
func newOpenLedger(ctx context.Context, js jetstream.JetStream, durable string, replicas int) (*openLedger, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      openBucket(durable),
		Replicas:    max(replicas, 1),
		Description: "tapline replay: stream sequence of each replayed connection's open event",
		TTL:         openLedgerTTL,
		History:     1,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, err
	}
	return &openLedger{kv: kv}, nil
}

// key encodes a connection id (an opaque string) as a valid key.
func openKey(conn string) string {
	return "c" + strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(conn)), "=")
}

// put records the open event's stream sequence.
func (l *openLedger) put(conn string, seq uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := l.kv.Put(ctx, openKey(conn), []byte(strconv.FormatUint(seq, 10)))
	return err
}

// forget deletes a finished connection's record.
func (l *openLedger) forget(conn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.kv.Purge(ctx, openKey(conn))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		err = nil
	}
	return err
}

// recover returns the open event of conn from the stream, or nil when none
// was recorded (or it is no longer in the stream).
func (r *runner) recoverOpen(conn string) *proto.OpenEvent {
	if r.opens == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := r.opens.kv.Get(ctx, openKey(conn))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			r.log.Warn("open event ledger", "conn", conn, "err", err)
		}
		return nil
	}
	seq, err := strconv.ParseUint(string(v.Value()), 10, 64)
	if err != nil {
		return nil
	}
	m, err := r.stream.GetMsg(ctx, seq)
	if err != nil {
		r.log.Warn("open event no longer in the stream", "conn", conn, "seq", seq, "err", err)
		return nil
	}
	e, err := parseEntry(m.Subject, m.Header, m.Data)
	if err != nil || e.open == nil || e.conn != conn {
		return nil
	}
	return e.open
}
