package views

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/proto"
)

// Item is one stream entry for a Table or Drops, with its stream time.
type Item struct {
	Stream  string
	Subject string
	Header  nats.Header
	Data    []byte
	Seq     uint64
	At      time.Time
}

// Apply folds one item into the table and the drops, returning what it
// changed; an entry that cannot be decoded is counted in t.Problems and
// returned as a "wire" change.
func Apply(t *Table, d *Drops, it Item) Change {
	switch it.Stream {
	case proto.MsgsStream:
		e, err := ledger.ParseEntry(it.Header, it.Data)
		if err != nil {
			t.Problems++
			return Change{What: "wire", Text: fmt.Sprintf("%s seq %d: %v", it.Stream, it.Seq, err)}
		}
		return t.AddMsg(e, it.Data, it.At)
	case proto.ResultsStream:
		r, err := ledger.ParseResult(it.Data)
		if err != nil {
			t.Problems++
			return Change{What: "wire", Text: fmt.Sprintf("%s seq %d: %v", it.Stream, it.Seq, err)}
		}
		return t.AddResult(r, it.At)
	case proto.EventsStream:
		ok, err := d.Add(it.Subject, it.Data, it.At)
		if err != nil {
			t.Problems++
			return Change{What: "wire", Text: fmt.Sprintf("%s seq %d: %v", it.Stream, it.Seq, err)}
		}
		if ok {
			return Change{What: "drops", Text: it.Subject + " " + string(it.Data)}
		}
	}
	return Change{}
}

// ViewStreams are the streams the views read: messages and events first,
// then results.
var ViewStreams = []string{proto.MsgsStream, proto.ResultsStream, proto.EventsStream}

// ItemOf converts a consumed message.
func ItemOf(stream string, m jetstream.Msg, md *jetstream.MsgMetadata) Item {
	return Item{Stream: stream, Subject: m.Subject(), Header: nats.Header(m.Headers()), Data: m.Data(),
		Seq: md.Sequence.Stream, At: md.Timestamp}
}

// Collect reads what the view streams hold from since on into a table and
// drops. A missing results or events stream reads as empty (replay off,
// or no stage reported yet), and is named in missing; a missing messages
// stream is an error.
func Collect(ctx context.Context, js jetstream.JetStream, since time.Time) (t *Table, d *Drops, missing []string, err error) {
	t, d = NewTable(), NewDrops()
	for _, s := range ViewStreams {
		err := Each(ctx, js, Read{Stream: s, Since: since}, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
			Apply(t, d, ItemOf(s, m, md))
			return nil
		}, nil)
		if errors.Is(err, ErrNoStream) {
			if s == proto.MsgsStream {
				return nil, nil, nil, fmt.Errorf("no %s stream on this NATS server: is a Tapline deployment (reassemble) using it? (--nats-url)", s)
			}
			missing = append(missing, s)
			continue
		}
		if err != nil {
			return nil, nil, nil, err
		}
	}
	return t, d, missing, nil
}
