package reassemble

import (
	"bytes"
	"testing"

	"github.com/tapline/tapline/proto"
)

// TestSyntheticBadFramesReported: frames the decoder cannot publish as
// they are reach the close summary: a frame with an unknown opcode is
// counted in messages_lost (and decode_failures_total{kind="lost_message"}),
// a frame whose 64-bit length has the top bit set is published flagged
// bad-frame and counted incomplete; the text messages after it are exact,
// and the summary's counts are those of the stream.
func TestSyntheticBadFramesReported(t *testing.T) {
	text := func(i int) []byte {
		return append([]byte("a text message after the bad frames, number "), byte('0'+i))
	}
	var s2c []byte
	s2c = append(s2c, wsFrame(2, []byte("first"), false)...)
	s2c = append(s2c, wsFrame(3, []byte("reserved!!"), false)...)
	s2c = append(s2c, 0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 16)
	s2c = append(s2c, bytes.Repeat([]byte{0xa5}, 16)...)
	for i := range 4 {
		s2c = append(s2c, wsFrame(1, text(i), false)...)
	}
	segs := shift(cut(false, 0, s2c, 1400))
	c, reg := runSegmentsReg(t, true, handshake(), segs, true)
	msgs := c.msgs[proto.ServerToClient]
	if len(msgs) != 6 {
		t.Fatalf("%d server messages, want 6", len(msgs))
	}
	if m := msgs[1]; m.complete {
		t.Errorf("the top-bit frame's message is complete")
	}
	for i, m := range msgs[2:] {
		if !m.complete || !bytes.Equal(m.body, text(i)) {
			t.Errorf("text message %d: complete %v %q", i, m.complete, m.body)
		}
	}
	l := c.closeEv.S2C
	if l.MessagesLost != 1 || l.MessagesIncomplete != 1 || l.MessagesComplete != 5 || l.Gaps != 0 {
		t.Fatalf("loss summary %+v, want 5 complete, 1 incomplete, 1 lost, no gap", l)
	}
	waitFor(t, "metrics", func() bool {
		return metricValue(t, reg, "tapline_reassemble_decode_failures_total", map[string]string{"kind": "lost_message"}) == 1
	})
}

// TestCloseSummaryCountsDataMessages: the close summary's message counts
// are the data messages (what the application received); the ping and the
// close frame are counted apart, as control frames.
func TestCloseSummaryCountsDataMessages(t *testing.T) {
	var s2c []byte
	s2c = append(s2c, wsFrame(1, []byte("one"), false)...)
	s2c = append(s2c, wsFrame(9, []byte("ping"), false)...)
	s2c = append(s2c, wsFrame(2, []byte("two"), false)...)
	s2c = append(s2c, wsFrame(8, []byte{0x03, 0xe8}, false)...)
	c, _ := runSegmentsReg(t, true, handshake(), shift(cut(false, 0, s2c, 1400)), true)
	if n := len(c.msgs[proto.ServerToClient]); n != 4 {
		t.Fatalf("%d server entries published, want 4 (2 messages, 2 control frames)", n)
	}
	l := c.closeEv.S2C
	if l.MessagesComplete != 2 || l.MessagesIncomplete != 0 || l.ControlFrames != 2 || l.ControlIncomplete != 0 {
		t.Fatalf("loss summary %+v, want 2 complete messages and 2 control frames", l)
	}
}
