package ledger

import (
	"fmt"

	"github.com/tapline/tapline/replay"
)

// Results gathers replay's entries of TAPLINE_RESULTS.
type Results struct {
	msgs      map[string][]replay.Result // conn/dir/seq -> results in order
	summaries map[string][]replay.Result // conn -> summaries in order
	n         int
}

// NewResults returns an empty Results.
func NewResults() *Results {
	return &Results{msgs: map[string][]replay.Result{}, summaries: map[string][]replay.Result{}}
}

// AddResult takes the JSON body of the next entry of TAPLINE_RESULTS.
func (r *Results) AddResult(body []byte) error {
	res, err := ParseResult(body)
	if err != nil {
		return err
	}
	r.Add(res)
	return nil
}

// Add takes one decoded result.
func (r *Results) Add(res replay.Result) {
	r.n++
	switch res.Kind {
	case "summary":
		r.summaries[res.Conn] = append(r.summaries[res.Conn], res)
	default:
		id := fmt.Sprintf("%s/%s/%d", res.Conn, res.Dir, res.Seq)
		r.msgs[id] = append(r.msgs[id], res)
	}
}

// Len is the number of results added.
func (r *Results) Len() int { return r.n }

// message returns the results of one message.
func (r *Results) message(conn, dir string, seq uint64) []replay.Result {
	return r.msgs[fmt.Sprintf("%s/%s/%d", conn, dir, seq)]
}

// Summaries returns the summaries of a connection id, in order.
func (r *Results) Summaries(conn string) []replay.Result { return r.summaries[conn] }
