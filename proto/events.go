package proto

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
)

// OpenEvent is the JSON body of a KindOpen entry: a connection was seen. For
// a WebSocket connection whose upgrade was mirrored, the request and the
// negotiated response fields are filled; for a connection whose handshake
// was not seen (mirroring started mid-connection) MidStream is true.
type OpenEvent struct {
	Conn        string            `json:"conn"`
	VNI         uint32            `json:"vni"`
	Client      string            `json:"client"`
	Server      string            `json:"server"`
	Protocol    string            `json:"protocol"` // "websocket" or "tcp"
	Path        string            `json:"path,omitempty"`
	Host        string            `json:"host,omitempty"`
	Subprotocol string            `json:"subprotocol,omitempty"`
	Extensions  string            `json:"extensions,omitempty"` // Sec-WebSocket-Extensions as negotiated by the 101 response
	Headers     map[string]string `json:"headers,omitempty"`    // other upgrade request headers, first value each
	MidStream   bool              `json:"mid_stream,omitempty"`
	// RedactedHeaders names the upgrade request headers reassemble left
	// out of Headers because they carry credentials (Authorization,
	// Cookie, X-Api-Key, …; see proto/redact), and RedactedQuery the query
	// parameters it removed from Path for the same reason: their values
	// were never stored (reassemble --keep-credentials keeps them).
	RedactedHeaders []string `json:"redacted_headers,omitempty"`
	RedactedQuery   []string `json:"redacted_query,omitempty"`
	// Resumes is the id of the connection this one continues: closed
	// (idle, evicted, seq_jump) before more of its packets came on the same
	// 5-tuple. Same client, server and handshake (path, headers,
	// extensions); Seq counts from 1 again.
	Resumes string `json:"resumes,omitempty"`
	FirstNs int64  `json:"first_ns"`
	// TLS is set for a connection detected as TLS (see TLSInfo).
	TLS *TLSInfo `json:"tls,omitempty"`
}

// GapEvent is the JSON body of a KindGap entry: Bytes bytes of Dir were lost
// by the mirror starting at relative stream offset Offset.
type GapEvent struct {
	Conn   string    `json:"conn"`
	Dir    Direction `json:"dir"`
	Offset int64     `json:"offset"`
	Bytes  int64     `json:"bytes"`
	AtNs   int64     `json:"at_ns"`
	Reason string    `json:"reason,omitempty"` // e.g. "mirror loss", "reorder window exceeded", "buffer cap"
}

// DirLoss is the loss account of one direction of a connection.
type DirLoss struct {
	BytesSeen    int64 `json:"bytes_seen"`    // unique payload bytes captured
	BytesImplied int64 `json:"bytes_implied"` // payload bytes implied by TCP sequence numbers
	BytesMissing int64 `json:"bytes_missing"` // BytesImplied - BytesSeen
	Gaps         int64 `json:"gaps"`
	// MessagesComplete and MessagesIncomplete count the data messages
	// published (text, binary, tcp: what an application receives).
	MessagesComplete   int64 `json:"messages_complete"`
	MessagesIncomplete int64 `json:"messages_incomplete"`
	// ControlFrames counts the WebSocket control frames published (ping,
	// pong, close), ControlIncomplete those flagged incomplete. A close
	// event without control_frames comes from a reassembler that counted
	// control frames in the message counts.
	ControlFrames     int64 `json:"control_frames"`
	ControlIncomplete int64 `json:"control_incomplete,omitempty"`
	Undecodable       int64 `json:"undecodable,omitempty"` // messages that could not be decoded (e.g. compressed without context)
	// MessagesLost counts messages whose start the decoder saw but could
	// not publish (bad frames skipped, frames given up while
	// resynchronising after a loss); messages whose header was lost
	// entirely are accounted by the gap events' bytes only.
	MessagesLost int64 `json:"messages_lost,omitempty"`
}

// CloseEvent is the JSON body of a KindClose entry: the connection ended (FIN,
// RST, idle timeout or shutdown) and this is its loss summary.
type CloseEvent struct {
	Conn   string  `json:"conn"`
	Reason string  `json:"reason"` // fin, rst, idle, evicted, memory, reused, seq_jump, close_notify, shutdown
	AtNs   int64   `json:"at_ns"`
	C2S    DirLoss `json:"c2s"`
	S2C    DirLoss `json:"s2c"`
	// TLS is the record account of a TLS connection.
	TLS *TLSClose `json:"tls,omitempty"`
}

// EventMsg builds the NATS message of a connection event on subject. body is
// marshalled as JSON; msgID de-duplicates a republished event.
func EventMsg(subject string, kind Kind, conn string, vni uint32, msgID string, body any) (*nats.Msg, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("proto: encode %s event: %w", kind, err)
	}
	m := nats.NewMsg(subject)
	m.Header.Set(HdrVersion, Version)
	m.Header.Set(HdrKind, string(kind))
	m.Header.Set(HdrConn, conn)
	m.Header.Set(HdrVNI, fmt.Sprint(vni))
	if msgID != "" {
		m.Header.Set(HdrMsgID, msgID)
	}
	m.Data = data
	return m, nil
}
