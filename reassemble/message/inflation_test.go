package message_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

	coder "github.com/coder/websocket"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
)

// bombSize is the inflated size of the decompression bomb: 32 MiB of
// zeros, about 32 KB as permessage-deflate on the wire.
const bombSize = 32 << 20

// inflationTraffic is a real permessage-deflate session (coder/websocket
// on both ends): a small message, the bomb, a genuine 6 MiB message of
// random words (a ratio of a few), and a small one after.
func inflationTraffic(t *testing.T, mode coder.CompressionMode) traffic {
	rng := rand.New(rand.NewSource(7))
	words := []string{"price", "symbol", "BTC", "ETH", "bid", "ask", "qty", "ts", "trade", "book"}
	var legit bytes.Buffer
	for legit.Len() < 6<<20 {
		fmt.Fprintf(&legit, `{"%s":%d},`, words[rng.Intn(len(words))], rng.Int63())
	}
	return coderSession(t, mode, []byte("hello"), make([]byte, bombSize), legit.Bytes(), []byte("after"))
}

// TestInflationLimit: with --max-inflation-ratio the bomb is published cut
// at InflationFree and flagged inflation-limit in both directions (the
// server's reply is a bomb too), the genuine large message is exact, and
// without context takeover the message after the bomb is exact as well.
func TestInflationLimit(t *testing.T) {
	tr := inflationTraffic(t, coder.CompressionNoContextTakeover)
	col, dec := runLimits(t, tr.ev, message.Meta{ClientKnown: true}, message.Limits{MaxInflation: 200})
	for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
		got := dataMsgs(col.dir(dir))
		want := tr.sent[dir]
		if len(got) != len(want) {
			t.Fatalf("%s: %d data messages, want %d", dir, len(got), len(want))
		}
		for i, g := range got {
			w := want[i]
			if i == 1 {
				if g.Complete || g.Reason != proto.ReasonInflationLimit || g.Size > message.InflationFree || !g.Compressed {
					t.Errorf("%s bomb: complete=%v reason %q size %d compressed %v, want flagged %q at most %d bytes",
						dir, g.Complete, g.Reason, g.Size, g.Compressed, proto.ReasonInflationLimit, message.InflationFree)
				}
				continue
			}
			if !g.Complete || g.Sum != w.sum || int(g.Size) != w.n {
				t.Errorf("%s #%d: complete=%v reason %q size %d, want exact %d bytes", dir, i, g.Complete, g.Reason, g.Size, w.n)
			}
		}
		if st := dec.Stats(dir); st.MessagesIncomplete != 1 || st.Undecodable != 0 {
			t.Errorf("%s stats %+v", dir, st)
		}
	}
}

// TestInflationLimitContextTakeover: with context takeover the window is
// gone after the cut, so the messages after the bomb are flagged
// (undecodable), never garbage.
func TestInflationLimitContextTakeover(t *testing.T) {
	tr := inflationTraffic(t, coder.CompressionContextTakeover)
	col, _ := runLimits(t, tr.ev, message.Meta{ClientKnown: true}, message.Limits{MaxInflation: 200})
	got := dataMsgs(col.dir(proto.ClientToServer))
	if len(got) < 2 || got[1].Reason != proto.ReasonInflationLimit {
		t.Fatalf("bomb not flagged inflation-limit: %+v", got)
	}
	checkNoGarbage(t, got, tr.sent[proto.ClientToServer])
	for _, g := range got[2:] {
		if !g.Complete && g.Reason != proto.ReasonUndecodable {
			t.Errorf("message %d after the bomb flagged %q", g.Seq, g.Reason)
		}
	}
}

// TestInflationUnlimited: with no ratio limit (0) the bomb is published
// complete, as before the limit existed: a genuine message of any ratio
// can be let through deliberately.
func TestInflationUnlimited(t *testing.T) {
	tr := inflationTraffic(t, coder.CompressionNoContextTakeover)
	col, _ := runLimits(t, tr.ev, message.Meta{ClientKnown: true}, message.Limits{})
	checkExact(t, col, tr)
	for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
		bomb := dataMsgs(col.dir(dir))[1]
		if !bomb.Compressed || bomb.WireSize == 0 || bomb.Size/bomb.WireSize < 500 {
			t.Errorf("%s bomb: compressed %v, %d bytes from %d on the wire: not a decompression bomb", dir, bomb.Compressed, bomb.Size, bomb.WireSize)
		}
	}
}
