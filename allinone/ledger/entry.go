package ledger

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay"
)

// Entry is one entry of TAPLINE_MSGS decoded: a data chunk (Chunk, its
// body being the NATS message data) or a connection event (exactly one of
// Open, Gap, Close set). It is the one parser of the messages stream that
// the ledger and the views (`tapline watch`, `tapline report`) share.
type Entry struct {
	Kind  proto.Kind
	Chunk proto.Chunk // for KindData
	Open  *proto.OpenEvent
	Gap   *proto.GapEvent
	Close *proto.CloseEvent
}

// ParseEntry decodes the headers and body of one TAPLINE_MSGS entry. An
// unknown Tapline-Kind, missing or malformed headers or a malformed event
// body are an error naming the cause.
func ParseEntry(h nats.Header, body []byte) (Entry, error) {
	e := Entry{Kind: proto.Kind(h.Get(proto.HdrKind))}
	var err error
	switch e.Kind {
	case proto.KindData:
		e.Chunk, err = proto.ParseChunk(h)
	case proto.KindOpen:
		e.Open = &proto.OpenEvent{}
		err = json.Unmarshal(body, e.Open)
	case proto.KindGap:
		e.Gap = &proto.GapEvent{}
		err = json.Unmarshal(body, e.Gap)
	case proto.KindClose:
		e.Close = &proto.CloseEvent{}
		err = json.Unmarshal(body, e.Close)
	default:
		err = fmt.Errorf("unknown %s %q", proto.HdrKind, e.Kind)
	}
	if err != nil {
		return Entry{Kind: e.Kind}, err
	}
	if e.Kind != proto.KindData && eventConn(e) == "" {
		return Entry{Kind: e.Kind}, fmt.Errorf("%s event without conn", e.Kind)
	}
	return e, nil
}

func eventConn(e Entry) string {
	switch {
	case e.Open != nil:
		return e.Open.Conn
	case e.Gap != nil:
		return e.Gap.Conn
	case e.Close != nil:
		return e.Close.Conn
	}
	return ""
}

// ParseResult decodes the JSON body of one TAPLINE_RESULTS entry.
func ParseResult(body []byte) (replay.Result, error) {
	var res replay.Result
	if err := json.Unmarshal(body, &res); err != nil {
		return res, fmt.Errorf("ledger: result: %w", err)
	}
	return res, nil
}
