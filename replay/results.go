package replay

import (
	"encoding/json"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/redact"
)

// Result is the JSON body of an entry on tapline.results.<vni>.<shard>.
type Result struct {
	Kind     string          `json:"kind"` // "message" or "summary"
	Conn     string          `json:"conn"`
	VNI      uint32          `json:"vni"`
	Dir      proto.Direction `json:"dir,omitempty"`
	Seq      uint64          `json:"seq,omitempty"`
	Result   string          `json:"result"`
	Reason   string          `json:"reason,omitempty"`
	Opcode   string          `json:"opcode,omitempty"`
	Size     int64           `json:"size,omitempty"`
	Complete *bool           `json:"complete,omitempty"`
	Missing  int64           `json:"missing,omitempty"`
	Target   string          `json:"target,omitempty"`
	Attempts int             `json:"attempts,omitempty"`
	LagMs    float64         `json:"lag_ms,omitempty"`
	Expected *Digest         `json:"expected,omitempty"`
	Got      *Digest         `json:"got,omitempty"`
	Index    int             `json:"index,omitempty"`
	Summary  *ConnSummary    `json:"summary,omitempty"`
	shard    int
}

// ResultInDoubt is the result of a message a previous replay wrote to the
// test system but stopped (crashed) before the test system confirmed it:
// it may or may not have been received, and it is not sent again (never
// twice). See replay/README.md.
const ResultInDoubt = "in-doubt"

// Digest identifies a compared payload.
type Digest struct {
	Opcode string `json:"opcode"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ConnSummary is the per-connection summary published when a replayed
// connection ends.
type ConnSummary struct {
	Client     string            `json:"client,omitempty"`
	Server     string            `json:"server,omitempty"`
	Path       string            `json:"path,omitempty"`
	Protocol   string            `json:"protocol,omitempty"`
	Sent       int64             `json:"sent"`
	SentBytes  int64             `json:"sent_bytes"`
	Skipped    int64             `json:"skipped"`
	Failed     int64             `json:"failed"`
	Incomplete int64             `json:"incomplete"`
	InDoubt    int64             `json:"in_doubt,omitempty"`
	Gaps       int64             `json:"gaps"`
	Reconnects int64             `json:"reconnects"`
	Comparison any               `json:"comparison,omitempty"`
	Loss       *proto.CloseEvent `json:"loss,omitempty"`
	End        string            `json:"end"` // close, idle, failed, shutdown, filtered
}

// resultsPub publishes results asynchronously.
type resultsPub struct {
	js    jetstream.JetStream
	level string
	subj  func(vni uint32, shard int) string
	log   *slog.Logger
	m     *metrics
	// id and n make each result's Nats-Msg-Id; retry holds the failed
	// ones for a resend (resultsretry.go).
	id    string
	n     atomic.Uint64
	retry *resultRetries
}

func (p *resultsPub) publish(r Result) {
	if p.level == ResultsOff {
		return
	}
	if p.level == ResultsProblems && r.Kind == "message" && (r.Result == "sent" || r.Result == "match") {
		return
	}
	r = redactResult(r)
	body, err := json.Marshal(r)
	if err != nil {
		return
	}
	msg := nats.NewMsg(p.subj(r.VNI, r.shard))
	msg.Header.Set(proto.HdrVersion, proto.Version)
	msg.Header.Set(proto.HdrKind, r.Kind)
	msg.Header.Set(proto.HdrConn, r.Conn)
	if r.Dir != "" {
		msg.Header.Set(proto.HdrDir, string(r.Dir))
	}
	msg.Header.Set(proto.HdrSeq, strconv.FormatUint(r.Seq, 10))
	msg.Header.Set(proto.HdrResult, r.Result)
	if r.Reason != "" {
		msg.Header.Set(proto.HdrReason, r.Reason)
	}
	msg.Header.Set(proto.HdrMsgID, p.id+"/"+strconv.FormatUint(p.n.Add(1), 10))
	msg.Data = body
	p.retry.waitRoom()
	if _, err := p.js.PublishMsgAsync(msg); err != nil {
		p.m.errors.WithLabelValues("results").Inc()
		p.log.Warn("publish result", "err", err)
	}
}

// redactResult masks credentials (URL passwords, secret-looking query
// parameters, "Authorization: …" in error text; see proto/redact) in what a
// result says about the target and the production connection: results are
// read by people and tools that must not learn production tokens.
func redactResult(r Result) Result {
	r.Reason = redact.Text(r.Reason)
	r.Target = redact.URL(r.Target)
	if r.Summary != nil {
		s := *r.Summary
		s.Path = redact.URL(s.Path)
		r.Summary = &s
	}
	return r
}
