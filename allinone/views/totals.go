package views

import "strconv"

// Totals is the sum over connections.
type Totals struct {
	Conns    int64 `json:"connections"`
	Open     int64 `json:"open"`
	Lossy    int64 `json:"lossy"`
	Complete int64 `json:"messages_complete"`
	// Flagged counts flagged messages by Tapline-Reason.
	Flagged map[string]int64 `json:"messages_flagged"`
	Lost    int64            `json:"messages_lost"`
	// MissingC2S and MissingS2C are the bytes reported missing per
	// direction.
	MissingC2S int64            `json:"bytes_missing_c2s"`
	MissingS2C int64            `json:"bytes_missing_s2c"`
	Gaps       int64            `json:"gaps"`
	Replay     map[string]int64 `json:"replay"`
	// Retired counts the closed connections no longer listed (beyond the
	// table's bound) but still in these totals.
	Retired int64 `json:"retired,omitempty"`
}

// FlaggedTotal is the number of flagged messages over every reason.
func (t *Totals) FlaggedTotal() int64 {
	var n int64
	for _, v := range t.Flagged {
		n += v
	}
	return n
}

func (t *Totals) add(c *Conn) {
	if t.Flagged == nil {
		t.Flagged = map[string]int64{}
	}
	if t.Replay == nil {
		t.Replay = map[string]int64{}
	}
	t.Conns++
	if c.State != "closed" {
		t.Open++
	}
	if c.Lossy() {
		t.Lossy++
	}
	for _, d := range []*DirView{&c.C2S, &c.S2C} {
		t.Complete += d.Complete
		t.Lost += d.Lost
		t.Gaps += d.Gaps
		for k, v := range d.Flagged {
			t.Flagged[k] += v
		}
	}
	t.MissingC2S += c.C2S.BytesMissing
	t.MissingS2C += c.S2C.BytesMissing
	for k, v := range c.Replay {
		t.Replay[k] += v
	}
}

func itoa(n int64) string  { return strconv.FormatInt(n, 10) }
func utoa(n uint64) string { return strconv.FormatUint(n, 10) }
