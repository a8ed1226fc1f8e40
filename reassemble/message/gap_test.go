package message_test

import (
	"fmt"
	"math/rand"
	"testing"

	coder "github.com/coder/websocket"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/message/httpup"
	"github.com/tapline/tapline/reassemble/message/wsframe"
)

// frameInfo locates one frame in a direction's byte stream.
type frameInfo struct {
	hdr, payload, end int
	h                 wsframe.Header
	msg               int // index of the data message it belongs to (-1: control)
}

func stream(ev []event, dir proto.Direction) []byte {
	var b []byte
	for _, e := range ev {
		if e.dir == dir {
			b = append(b, e.b...)
		}
	}
	return b
}

// layout parses the frames of a recorded direction (after its handshake).
func layout(t *testing.T, b []byte) []frameInfo {
	pos := httpup.HeaderEnd(b)
	var out []frameInfo
	msg := -1
	open := false
	for pos < len(b) {
		h, n, err := wsframe.Parse(b[pos:])
		if err != nil {
			t.Fatalf("layout at %d: %v", pos, err)
		}
		f := frameInfo{hdr: pos, payload: pos + n, end: pos + n + int(h.Length), h: h, msg: -1}
		if !wsframe.IsControl(h.Opcode) {
			if !open {
				msg++
			}
			f.msg = msg
			open = !h.Fin
		}
		out = append(out, f)
		pos = f.end
	}
	return out
}

// withGap replaces bytes [off, off+n) of dir's stream by a Gap.
func withGap(ev []event, dir proto.Direction, off, n int) []event {
	var out []event
	pos := 0
	gapDone := false
	for _, e := range ev {
		if e.dir != dir {
			out = append(out, e)
			continue
		}
		s, end := pos, pos+len(e.b)
		pos = end
		if end <= off || s >= off+n {
			out = append(out, e)
			continue
		}
		if off > s {
			out = append(out, event{dir: dir, b: e.b[:off-s]})
		}
		if !gapDone {
			out = append(out, event{dir: dir, gap: int64(n)})
			gapDone = true
		}
		if off+n < end {
			out = append(out, event{dir: dir, b: e.b[off+n-s:]})
		}
	}
	return out
}

// firstFrame returns the first frame of data message k.
func firstFrame(fr []frameInfo, k int) frameInfo {
	for _, f := range fr {
		if f.msg == k {
			return f
		}
	}
	panic("no such message")
}

func lastFrame(fr []frameInfo, k int) frameInfo {
	var l frameInfo
	for _, f := range fr {
		if f.msg == k {
			l = f
		}
	}
	return l
}

type session struct {
	name     string
	tr       traffic
	takeover bool
}

func sessions(t *testing.T) []session {
	return []session{
		{"gorilla", gorillaSession(t), false},
		{"coder-no-takeover", coderSession(t, coder.CompressionNoContextTakeover), false},
		{"coder-takeover", coderSession(t, coder.CompressionContextTakeover), true},
	}
}

func TestGapInsidePayload(t *testing.T) {
	for _, s := range sessions(t) {
		for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
			t.Run(s.name+"/"+string(dir), func(t *testing.T) {
				fr := layout(t, stream(s.tr.ev, dir))
				const k = 7 // a 70000-byte text message
				f := firstFrame(fr, k)
				n := min(100, f.end-f.payload-20)
				col, dec := run(t, withGap(s.tr.ev, dir, f.payload+10, n), message.Meta{ClientKnown: true})
				got := dataMsgs(col.dir(dir))
				want := s.tr.sent[dir]
				lost := checkNoGarbage(t, got, want)
				if len(lost) == 0 || lost[0] != k {
					t.Fatalf("lost %v, want message %d first", lost, k)
				}
				if !s.takeover && len(lost) != 1 {
					t.Fatalf("lost %v, want only %d", lost, k)
				}
				if len(got) != len(want) {
					t.Fatalf("%d messages, want %d (the flagged one included)", len(got), len(want))
				}
				if m := got[k]; m.Complete || m.Missing != int64(n) {
					t.Errorf("message %d: complete=%v missing=%d, want false/%d", k, m.Complete, m.Missing, n)
				}
				if !got[k].Compressed && int(got[k].Size) != want[k].n-n {
					t.Errorf("message %d: size %d, want %d", k, got[k].Size, want[k].n-n)
				}
				if st := dec.Stats(dir); st.Resyncs != 0 || st.MessagesIncomplete != int64(len(lost)) {
					t.Errorf("stats %+v with %d lost", st, len(lost))
				}
				other := flip(dir)
				if l := checkNoGarbage(t, dataMsgs(col.dir(other)), s.tr.sent[other]); len(l) != 0 {
					t.Errorf("other direction lost %v", l)
				}
				t.Logf("lost %v undecodable %d", lost, dec.Stats(dir).Undecodable)
			})
		}
	}
}

func TestGapInsideHeader(t *testing.T) {
	for _, s := range sessions(t) {
		for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
			t.Run(s.name+"/"+string(dir), func(t *testing.T) {
				fr := layout(t, stream(s.tr.ev, dir))
				for _, k := range []int{3, 8, 10} {
					f := firstFrame(fr, k)
					col, dec := run(t, withGap(s.tr.ev, dir, f.hdr+1, 3), message.Meta{ClientKnown: true})
					got := dataMsgs(col.dir(dir))
					lost := checkNoGarbage(t, got, s.tr.sent[dir])
					// The message whose header was lost is gone; the next one
					// may be sacrificed when the boundary after the loss is
					// disputed by a chain that started in the lost frame's
					// payload (resync then resumes where the chains meet).
					// Resync may also give up up to 3 frames with weak evidence
					// (binary) after the loss, so up to 3 more messages.
					if len(lost) == 0 || lost[0] != k || (!s.takeover && lost[len(lost)-1] > k+3) {
						t.Errorf("header of %d lost: lost %v", k, lost)
					}
					if st := dec.Stats(dir); st.Resyncs == 0 {
						t.Errorf("no resync counted: %+v", st)
					}
				}
			})
		}
	}
}

// TestGapAcrossMessages drops the end of one message and the header of the
// next.
func TestGapAcrossMessages(t *testing.T) {
	for _, s := range sessions(t) {
		dir := proto.ServerToClient
		t.Run(s.name, func(t *testing.T) {
			fr := layout(t, stream(s.tr.ev, dir))
			const k = 4
			l := lastFrame(fr, k)
			off := max(l.payload, l.end-50)
			col, _ := run(t, withGap(s.tr.ev, dir, off, l.end-off+4), message.Meta{ClientKnown: true})
			got := dataMsgs(col.dir(dir))
			lost := checkNoGarbage(t, got, s.tr.sent[dir])
			if len(lost) < 1 || lost[0] != k || (!s.takeover && lost[len(lost)-1] > k+4) {
				t.Errorf("lost %v", lost)
			}
			if m := got[k]; m.Complete || m.Missing < int64(l.end-off) {
				t.Errorf("message %d complete=%v missing %d", k, m.Complete, m.Missing)
			}
		})
	}
}

// TestMidStream starts decoding at random offsets of both directions,
// with the client guessed at random.
func TestMidStream(t *testing.T) {
	iters := 20
	if testing.Short() {
		iters = 5
	}
	for _, s := range sessions(t) {
		t.Run(s.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(42))
			cut := map[proto.Direction]int{}
			fr := map[proto.Direction][]frameInfo{}
			for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
				fr[dir] = layout(t, stream(s.tr.ev, dir))
			}
			for it := 0; it < iters; it++ {
				for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
					// Cut anywhere before message 9, so that what follows the cut
					// verifies within the bytes a mid-stream direction may hold
					// (after 1 MiB of unverifiable bytes it is published as raw TCP).
					st := stream(s.tr.ev, dir)
					start := httpup.HeaderEnd(st) + 1
					cut[dir] = start + rng.Intn(firstFrame(fr[dir], 9).hdr-start)
				}
				var ev []event
				pos := map[proto.Direction]int{}
				swap := it%2 == 1
				for _, e := range s.tr.ev {
					p := pos[e.dir]
					pos[e.dir] += len(e.b)
					if p+len(e.b) <= cut[e.dir] {
						continue
					}
					b := e.b
					if p < cut[e.dir] {
						b = b[cut[e.dir]-p:]
					}
					d := e.dir
					if swap {
						d = flip(d)
					}
					ev = append(ev, event{dir: d, b: b})
				}
				col, _ := run(t, ev, message.Meta{MidStream: true})
				if len(col.opens) != 1 || !col.opens[0].MidStream || col.opens[0].Protocol != "websocket" {
					t.Fatalf("it %d: open %+v (cuts %v)", it, *col.opens[0], cut)
				}
				if swap != (col.swaps == 1) {
					t.Fatalf("it %d: swap %v, swaps %d", it, swap, col.swaps)
				}
				for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
					lost := checkNoGarbage(t, dataMsgs(col.dir(dir)), s.tr.sent[dir])
					// Every message whose first header is after the cut must be
					// there, but for the first three.
					first := len(s.tr.sent[dir])
					for _, f := range fr[dir] {
						if f.msg >= 0 && f.hdr >= cut[dir] && (f.msg == 0 || fr[dir][0].msg != f.msg) {
							if ff := firstFrame(fr[dir], f.msg); ff.hdr >= cut[dir] {
								first = f.msg
								break
							}
						}
					}
					// Resync gives up to 3 weak (binary) frames after the cut.
					for _, l := range lost {
						if l >= first+3 && !s.takeover {
							t.Errorf("it %d %s: cut %d, message %d (after the cut) lost; lost %v", it, dir, cut[dir], l, lost)
							break
						}
					}
				}
			}
		})
	}
}

// TestGapContextTakeoverUndecodable: with context takeover, messages
// after a lost compressed message that refer to it are flagged
// undecodable — never delivered as complete garbage — while the
// direction without loss is exact.
func TestGapContextTakeoverUndecodable(t *testing.T) {
	var msgs [][]byte
	for i := 0; i < 30; i++ {
		msgs = append(msgs, []byte(fmt.Sprintf(`{"seq":%d,"channel":"orders","payload":{"symbol":"ACME","side":"buy","qty":%d,"price":%d.25,"account":"A-1234567","note":"repeated text that the compressor finds in earlier messages"}}`, i, 100+i, 2000+i)))
	}
	tr := coderSession(t, coder.CompressionContextTakeover, msgs...)
	dir := proto.ServerToClient
	fr := layout(t, stream(tr.ev, dir))
	f := firstFrame(fr, 5)
	col, dec := run(t, withGap(tr.ev, dir, f.payload+3, 5), message.Meta{ClientKnown: true})
	got := dataMsgs(col.dir(dir))
	lost := checkNoGarbage(t, got, tr.sent[dir])
	st := dec.Stats(dir)
	if len(lost) < 2 || lost[0] != 5 || st.Undecodable == 0 {
		t.Fatalf("lost %v, stats %+v: want message 5 and undecodable ones after it", lost, st)
	}
	if int64(len(lost)) != st.MessagesIncomplete {
		t.Errorf("lost %d, incomplete %d", len(lost), st.MessagesIncomplete)
	}
	if l := checkNoGarbage(t, dataMsgs(col.dir(proto.ClientToServer)), tr.sent[proto.ClientToServer]); len(l) != 0 {
		t.Errorf("client direction lost %v", l)
	}
	t.Logf("lost %v, stats %+v", lost, st)
}
