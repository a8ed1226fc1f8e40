package replay

import (
	"encoding/json"
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
)

// entry is one decoded entry of the messages stream.
type entry struct {
	kind  proto.Kind
	conn  string
	vni   uint32
	shard int

	chunk proto.Chunk // kind data
	data  []byte
	open  *proto.OpenEvent
	gap   *proto.GapEvent
	close *proto.CloseEvent

	// JetStream bookkeeping.
	streamSeq uint64
	reply     string
	arrived   time.Time // when the entry was stored in the stream
	delivered uint64    // JetStream's delivery count (1: first delivery)
	held      int64     // bytes held against the in-flight budget
}

// parseEntry decodes one message of the messages stream. It never panics;
// every malformed input is an error naming what is wrong.
func parseEntry(subject string, h nats.Header, data []byte) (*entry, error) {
	vni, shard, err := proto.ParseSubject(subject)
	if err != nil {
		return nil, err
	}
	e := &entry{kind: proto.Kind(h.Get(proto.HdrKind)), vni: vni, shard: shard, data: data}
	switch e.kind {
	case proto.KindData:
		c, err := proto.ParseChunk(h)
		if err != nil {
			return nil, err
		}
		if len(data) > proto.MaxChunkAccepted {
			return nil, fmt.Errorf("chunk of %d bytes exceeds %d", len(data), proto.MaxChunkAccepted)
		}
		switch c.Opcode {
		case proto.OpText, proto.OpBinary, proto.OpPing, proto.OpPong, proto.OpClose, proto.OpTCP:
		default:
			return nil, fmt.Errorf("unknown opcode %q", c.Opcode)
		}
		e.chunk, e.conn = c, c.Conn
	case proto.KindOpen:
		e.open = &proto.OpenEvent{}
		if err := json.Unmarshal(data, e.open); err != nil {
			return nil, fmt.Errorf("open event: %w", err)
		}
	case proto.KindGap:
		e.gap = &proto.GapEvent{}
		if err := json.Unmarshal(data, e.gap); err != nil {
			return nil, fmt.Errorf("gap event: %w", err)
		}
	case proto.KindClose:
		e.close = &proto.CloseEvent{}
		if err := json.Unmarshal(data, e.close); err != nil {
			return nil, fmt.Errorf("close event: %w", err)
		}
	default:
		return nil, fmt.Errorf("unknown %s %q", proto.HdrKind, e.kind)
	}
	if e.kind != proto.KindData {
		e.conn = h.Get(proto.HdrConn)
		e.data = nil
	}
	if e.conn == "" {
		return nil, fmt.Errorf("header %s missing", proto.HdrConn)
	}
	return e, nil
}

// pathMatch reports whether the request path p (query ignored) matches the
// glob pattern.
func pathMatch(pattern, p string) (bool, error) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return path.Match(pattern, p)
}

// serverMatch reports whether the server address ip:port matches a
// --server value: ip:port, ip, or :port.
func serverMatch(want, server string) bool {
	if want == server {
		return true
	}
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		return false
	}
	if wh, wp, err := net.SplitHostPort(want); err == nil {
		return (wh == "" || wh == host) && wp == port
	}
	return strings.Trim(want, "[]") == host
}
