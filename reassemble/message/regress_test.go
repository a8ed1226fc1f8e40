package message_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	coder "github.com/coder/websocket"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// TestTopBitLengthFlagged: a frame whose 64-bit length has the top bit
// set (forbidden) is published as a message flagged bad-frame — not
// dropped — and the messages after it come out exact; the summary counts
// it.
func TestTopBitLengthFlagged(t *testing.T) {
	for _, masked := range []bool{false, true} {
		t.Run(fmt.Sprintf("masked=%v", masked), func(t *testing.T) {
			rng := rand.New(rand.NewSource(3))
			specs := []vspec{{op: wsframe.OpBinary, size: 300}, {op: wsframe.OpBinary, size: 500, bad: badTopBit}}
			for range 6 {
				specs = append(specs, vspec{op: wsframe.OpText, size: 200, text: true})
			}
			v := newVstream(rng, masked, specs, 0)
			col, dec := wsDecoder(t, message.Limits{})
			v.feed(dec, vdir(v), 1448, nil)
			st := dec.Stats(vdir(v))
			acc := checkAccounting(t, v, col, st, nil)
			out := col.dir(vdir(v))
			if len(out) != len(specs) {
				t.Fatalf("%d messages published, want %d (stats %+v)", len(out), len(specs), st)
			}
			if m := out[1]; m.Complete || m.Reason != proto.ReasonBadFrame {
				t.Errorf("bad frame's message: complete %v reason %q, want flagged bad-frame", m.Complete, m.Reason)
			}
			if acc.exact != len(specs)-1 || st.MessagesIncomplete != 1 || st.BadFrames != 1 {
				t.Errorf("%d exact, stats %+v: want every other message exact, one incomplete", acc.exact, st)
			}
		})
	}
}

// TestHugeLengthFlagged: a frame claiming 2^63-1 bytes or 2 GiB on a
// connection without any gap is flagged too-large (past MaxMessage) or
// cut (the connection ended first) — never gap — and the close summary
// counts it.
func TestHugeLengthFlagged(t *testing.T) {
	for _, tc := range []struct {
		length uint64
		max    int64
		reason string
	}{
		{1<<63 - 1, 0, proto.ReasonTooLarge},
		{2 << 30, 0, proto.ReasonTooLarge},
		{2 << 30, 4 << 30, proto.ReasonCut},
	} {
		t.Run(fmt.Sprintf("%d/max=%d", tc.length, tc.max), func(t *testing.T) {
			col, dec := wsDecoder(t, message.Limits{MaxMessage: tc.max})
			b := frame(false, wsframe.OpText, true, false, []byte("hello"))
			b = wsframe.Append(b, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Length: tc.length})
			b = append(b, make([]byte, 1000)...)
			dec.Data(proto.ServerToClient, b, 2)
			dec.Close(3)
			out := col.dir(proto.ServerToClient)
			if len(out) != 2 || !out[0].Complete {
				t.Fatalf("%d messages: %+v", len(out), out)
			}
			if m := out[1]; m.Complete || m.Reason != tc.reason || m.Size != 1000 {
				t.Errorf("huge frame: complete %v reason %q size %d, want flagged %s with its 1000 bytes", m.Complete, m.Reason, m.Size, tc.reason)
			}
			if st := dec.Stats(proto.ServerToClient); st.MessagesComplete != 1 || st.MessagesIncomplete != 1 {
				t.Errorf("stats %+v, want 1 complete and 1 incomplete", st)
			}
		})
	}
}

// TestCloseWhileHunting: a fragmented message whose next header was lost,
// and the connection ends before a boundary verifies: the message still
// gets its last chunk, flagged.
func TestCloseWhileHunting(t *testing.T) {
	for _, after := range []int{0, 7, 300} {
		t.Run(fmt.Sprint(after), func(t *testing.T) {
			col, dec := wsDecoder(t, message.Limits{})
			p := make([]byte, 1000)
			rand.New(rand.NewSource(5)).Read(p)
			dec.Data(proto.ServerToClient, frame(false, wsframe.OpBinary, false, false, p), 2)
			dec.Gap(proto.ServerToClient, 20, 3) // the next header and some payload
			dec.Data(proto.ServerToClient, p[:after], 4)
			dec.Close(5)
			out := col.dir(proto.ServerToClient)
			if len(col.open) != 0 || len(out) != 1 {
				t.Fatalf("%d messages without a last chunk, %d published", len(col.open), len(out))
			}
			if m := out[0]; m.Complete || m.Reason != proto.ReasonGap || m.Size != 1000 || m.Missing < 20 {
				t.Errorf("message: complete %v reason %q size %d missing %d", m.Complete, m.Reason, m.Size, m.Missing)
			}
			if st := dec.Stats(proto.ServerToClient); st.MessagesIncomplete != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestGapInLargeMessages (issue 17): pushes of 5, 10, 5, 10 and 1 MiB
// (scaled down from 50, 100, 50, 100, 10 MB), a 6.5 MiB gap 1.5 MiB into
// the second message. The second message ends with a last chunk flagged
// gap; every message is published or counted lost (none had its first
// header lost); where the frame boundary after the gap is known (the gap
// ends inside the frame it started in, or at its end) or the frames are
// small, the later messages are exact.
func TestGapInLargeMessages(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name  string
		frame int64
		from  int64 // gap start in the second message's payload
		n     int64
		exact bool // every later message exact
		all   bool // every message published or counted lost
	}{
		{"one-frame-gap-inside", 0, 1.5 * mib, 6.5 * mib, true, true},
		{"one-frame-gap-to-end", 0, 1.5 * mib, 8.5 * mib, true, true},
		// the third message's header is lost: it may be accounted by the
		// gap's bytes only
		{"one-frame-gap-past-end", 0, 1.5 * mib, 9 * mib, false, false},
		{"16KiB-frames", 16 << 10, 1.5 * mib, 6.5 * mib, true, true},
		// a continuation header is lost: frames as large as the bytes held
		// while hunting are given up (flagged or counted) until a boundary
		// verifies
		{"1MiB-frames", 1 * mib, 1.5 * mib, 6.5 * mib, false, true},
		{"6.4MiB-frames", 64 * mib / 10, 1.5 * mib, 6.5 * mib, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(17))
			var specs []vspec
			for _, sz := range []int64{5, 10, 5, 10, 1} {
				specs = append(specs, vspec{op: wsframe.OpBinary, size: sz * mib, frame: tc.frame})
			}
			v := newVstream(rng, false, specs, 0)
			f := v.frames[v.msgs[1].first]
			from := f.off + int64(len(f.hdr)) + tc.from
			cuts := []vcut{{from, from + tc.n}}
			col, dec := wsDecoder(t, message.Limits{})
			v.feed(dec, proto.ServerToClient, 1448*8, cuts)
			st := dec.Stats(proto.ServerToClient)
			acc := checkAccounting(t, v, col, st, cuts)
			out := col.dir(proto.ServerToClient)
			for _, m := range out {
				t.Logf("seq %d %s complete %v reason %q size %d missing %d", m.Seq, m.Opcode, m.Complete, m.Reason, m.Size, m.Missing)
			}
			t.Logf("stats %+v", st)
			if len(out) < 2 || out[1].Complete || out[1].Reason != proto.ReasonGap || out[1].Missing < min(tc.n, v.msgs[1].size-tc.from) {
				t.Fatalf("second message not flagged gap with its missing bytes")
			}
			if total := acc.complete + acc.incomplete + acc.lost; tc.all && total != len(specs) {
				t.Errorf("%d published + %d lost, the sender produced %d", acc.complete+acc.incomplete, acc.lost, len(specs))
			}
			if tc.exact && acc.exact != len(specs)-1 {
				t.Errorf("%d messages exact, want all but the second", acc.exact)
			}
		})
	}
}

// TestGapOverHeaderContextTakeover: permessage-deflate with context
// takeover, a gap over a message's header: the messages after it that
// cannot be inflated are published flagged undecodable (or counted lost by
// the hunt), never dropped silently; nothing garbage is complete.
func TestGapOverHeaderContextTakeover(t *testing.T) {
	var msgs [][]byte
	for i := 0; i < 30; i++ {
		msgs = append(msgs, []byte(fmt.Sprintf(`{"seq":%d,"channel":"orders","payload":{"symbol":"ACME","side":"buy","qty":%d,"price":%d.25,"note":"repeated text that the compressor finds in earlier messages"}}`, i, 100+i, 2000+i)))
	}
	tr := coderSession(t, coder.CompressionContextTakeover, msgs...)
	dir := proto.ServerToClient
	fr := layout(t, stream(tr.ev, dir))
	f := firstFrame(fr, 5)
	col, dec := run(t, withGap(tr.ev, dir, f.hdr, f.payload-f.hdr+3), message.Meta{ClientKnown: true})
	got := dataMsgs(col.dir(dir))
	checkNoGarbage(t, got, tr.sent[dir])
	st := dec.Stats(dir)
	if pub := publishedCounts(col.dir(dir)); !countsMatch(st, pub) {
		t.Errorf("stats %+v, published %+v", st, pub)
	}
	// Message 5's header is lost: it may be accounted by the gap only.
	if n := int64(len(got)) + st.MessagesLost; n < int64(len(tr.sent[dir]))-1 {
		t.Errorf("%d data messages published + %d lost of %d sent (stats %+v)", len(got), st.MessagesLost, len(tr.sent[dir]), st)
	}
	if st.Undecodable == 0 {
		t.Errorf("no message flagged undecodable after losing the context (stats %+v)", st)
	}
	t.Logf("%d published, stats %+v", len(got), st)
}

// A gap that swallows whole compressed messages — from one frame header
// exactly to a later one — takes their output out of the sender's
// history: the window kept for context takeover is no longer the exact
// suffix of that history, so the messages after it must be flagged
// undecodable (or inflate exactly), never inflated against the stale
// window into text of the right length and the wrong bytes.
func TestGapOfWholeMessagesContextTakeover(t *testing.T) {
	var msgs [][]byte
	for i := 0; i < 12; i++ {
		// Each message repeats a phrase only the message before it had,
		// so it references exactly the history the gap removes.
		msgs = append(msgs, []byte(fmt.Sprintf(`{"seq":%d,"word":"w%03d-%s","prev":"w%03d-%s"}`, i, i, strings.Repeat(string(rune('a'+i%26)), 40), i-1, strings.Repeat(string(rune('a'+(i+25)%26)), 40))))
	}
	tr := coderSession(t, coder.CompressionContextTakeover, msgs...)
	dir := proto.ServerToClient
	fr := layout(t, stream(tr.ev, dir))
	from, to := firstFrame(fr, 4), lastFrame(fr, 5)
	col, dec := run(t, withGap(tr.ev, dir, from.hdr, to.end-from.hdr), message.Meta{ClientKnown: true})
	got := dataMsgs(col.dir(dir))
	checkNoGarbage(t, got, tr.sent[dir])
	t.Logf("%d published, stats %+v", len(got), dec.Stats(dir))
}
