package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/tapline/tapline/proto"
)

// Key names one TCP connection by the addresses production saw: the
// client (the side that opened it) and the server, both ip:port.
type Key struct {
	Client string `json:"client"`
	Server string `json:"server"`
}

func (k Key) String() string { return k.Client + "->" + k.Server }

// Msg identifies one WebSocket message (or raw TCP message) by content.
type Msg struct {
	Opcode string `json:"opcode"` // proto.OpText, proto.OpBinary, ...
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// NewMsg is the Msg of payload.
func NewMsg(opcode string, payload []byte) Msg {
	sum := sha256.Sum256(payload)
	return Msg{Opcode: opcode, Size: int64(len(payload)), SHA256: hex.EncodeToString(sum[:])}
}

func (m Msg) String() string {
	sha := m.SHA256
	if len(sha) > 12 {
		sha = sha[:12]
	}
	return fmt.Sprintf("%s %d bytes sha256 %s", m.Opcode, m.Size, sha)
}

// Production is what production received on one connection in one
// direction, in order: the messages the ledger must account for. For a
// connection mirrored from its middle, list only the messages sent after
// mirroring started.
type Production struct {
	Key  Key             `json:"key"`
	Dir  proto.Direction `json:"dir"`
	Msgs []Msg           `json:"msgs"`
}

// Delivery is one message as the test system received it. Aborted is set
// when the message ended before its end (replay closed the connection with
// status 1011, or the connection broke): an aborted delivery is not a
// delivery, but a non-aborted one must be a message production sent.
type Delivery struct {
	Msg
	Aborted bool `json:"aborted,omitempty"`
}

// Bounds are what the mirror path verifiably dropped, as bytes of TCP
// payload: the loss report (bytes missing over every connection and
// direction) must lie in [Lo, Hi]. Compute them from the drop counters
// (tc/tbf drops, receive-buffer drops, packets the frames stream never
// stored) times what one dropped packet can carry: Hi = drops × MSS, Lo
// from the packets known to carry data. Nil means no check.
type Bounds struct {
	Lo, Hi int64
	// Why says how they were computed (printed in the report).
	Why string
}

// Options shape a reconciliation.
type Options struct {
	// ReplayDir is the direction replay delivers to the test system:
	// s2c in listen mode, c2s in dial mode.
	ReplayDir proto.Direction
	// Incomplete is replay's --incomplete policy ("skip" when empty): with
	// skip, a flagged message must not reach the test system.
	Incomplete string
	// Bounds on the bytes reported missing; nil: not checked.
	Bounds *Bounds
	// NoResults skips the TAPLINE_RESULTS checks (replay ran with
	// --results off).
	NoResults bool
	// NoTestSystem skips the checks against what the test system received
	// (no deliveries are known).
	NoTestSystem bool
}
