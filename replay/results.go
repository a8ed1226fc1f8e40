package replay

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

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

// resultsPub stores results on TAPLINE_RESULTS.
type resultsPub struct {
	js    jetstream.JetStream
	level string
	subj  func(vni uint32, shard int) string
	log   *slog.Logger
	m     *metrics
}

// pendingResult is a result to store, with its Nats-Msg-Id (the results
// stream's de-duplication id, so a result published again after a failed
// or unanswered attempt is stored once) and, for a message's result, the
// stream sequence of the message's last chunk.
type pendingResult struct {
	res    Result
	id     string
	stream uint64
}

// messageResult is the result of the message whose last chunk has stream
// sequence stream. Its Msg-Id is the message's identity,
// m.<conn>.<dir>.<seq>.<stream> (proto/README.md): one message has one
// stored result, even when a restarted replay reports it again within the
// stream's duplicate window.
func messageResult(r Result, stream uint64) pendingResult {
	id := "m." + r.Conn + "." + string(r.Dir) + "." + strconv.FormatUint(r.Seq, 10) + "." + strconv.FormatUint(stream, 10)
	return pendingResult{res: r, id: id, stream: stream}
}

// otherResult is a result that is no message's own (a comparison, a
// summary, a connection-level failure): its Msg-Id is unique, so only its
// own retries are de-duplicated.
func otherResult(r Result) pendingResult {
	return pendingResult{res: r, id: "x." + r.Conn + "." + nuid.Next()}
}

// handles reports whether the result reports a message of the replayed
// direction dir, which the delivery ledger then records as handled.
func (pr *pendingResult) handles(dir proto.Direction) bool {
	return pr.stream > 0 && pr.res.Kind == "message" && pr.res.Dir == dir && pr.res.Seq > 0
}

// wanted reports whether --results publishes r.
func (p *resultsPub) wanted(r *Result) bool {
	switch {
	case p.level == ResultsOff:
		return false
	case p.level == ResultsProblems && r.Kind == "message" && (r.Result == "sent" || r.Result == "match"):
		return false
	}
	return true
}

func (p *resultsPub) msg(r Result) (*nats.Msg, error) {
	r = redactResult(r)
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
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
	msg.Data = body
	return msg, nil
}

// storeBackoff bounds the wait between attempts to store results.
const storeBackoff = 2 * time.Second

// store publishes the results and waits until JetStream has stored each
// one, publishing those not stored again with the same Msg-Id (the NATS
// server restarted, the stream was unavailable, no answer came) until
// they are. It returns false when ctx ended first.
func (p *resultsPub) store(ctx context.Context, rs []pendingResult) bool {
	todo := make([]pendingResult, 0, len(rs))
	for _, pr := range rs {
		if p.wanted(&pr.res) {
			todo = append(todo, pr)
		}
	}
	wait := 100 * time.Millisecond
	for len(todo) > 0 {
		var failed []pendingResult
		var lastErr error
		type inflight struct {
			pr  pendingResult
			ack jetstream.PubAckFuture
		}
		sent := make([]inflight, 0, len(todo))
		for _, pr := range todo {
			msg, err := p.msg(pr.res)
			if err != nil {
				p.log.Error("result cannot be encoded", "conn", pr.res.Conn, "err", err)
				continue
			}
			f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(pr.id))
			if err != nil {
				failed, lastErr = append(failed, pr), err
				continue
			}
			sent = append(sent, inflight{pr, f})
		}
		for _, s := range sent {
			select {
			case <-s.ack.Ok():
			case err := <-s.ack.Err():
				failed, lastErr = append(failed, s.pr), err
			case <-ctx.Done():
				return false
			}
		}
		if len(failed) == 0 {
			return true
		}
		p.m.errors.WithLabelValues("results").Add(float64(len(failed)))
		p.log.Warn("results not stored, publishing them again", "results", len(failed), "err", lastErr)
		if sleepCtx(ctx, wait) != nil {
			return false
		}
		wait = min(2*wait, storeBackoff)
		todo = failed
	}
	return true
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
