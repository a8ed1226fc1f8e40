package views

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay"
)

func eventItem(t testing.TB, kind proto.Kind, conn string, body any, at time.Time) Item {
	m, err := proto.EventMsg(proto.MsgsSubject(3, 1), kind, conn, 3, "", body)
	if err != nil {
		t.Fatal(err)
	}
	return Item{Stream: proto.MsgsStream, Subject: m.Subject, Header: m.Header, Data: m.Data, At: at}
}

func chunkItem(c proto.Chunk, body string, at time.Time) Item {
	return Item{Stream: proto.MsgsStream, Subject: proto.MsgsSubject(c.VNI, 1), Header: c.Header(), Data: []byte(body), At: at}
}

// A window that starts after the connection opened: the close event's
// counts are the truth, the messages not seen show as "before-window".
func TestTableWindowStartsMidConnection(t *testing.T) {
	tb, d := NewTable(), NewDrops()
	at := time.Unix(100, 0)
	ch := proto.Chunk{Conn: "c1", VNI: 3, Client: "10.0.0.1:5", Server: "10.0.0.2:80", Dir: proto.ClientToServer, Seq: 7,
		Last: true, Opcode: proto.OpText, Complete: false, Missing: 10, Size: 20, Reason: proto.ReasonGap}
	Apply(tb, d, chunkItem(ch, strings.Repeat("x", 20), at))
	Apply(tb, d, eventItem(t, proto.KindGap, "c1", proto.GapEvent{Conn: "c1", Dir: proto.ClientToServer, Bytes: 10}, at))
	Apply(tb, d, eventItem(t, proto.KindClose, "c1", proto.CloseEvent{Conn: "c1", Reason: "rst",
		C2S: proto.DirLoss{BytesMissing: 25, Gaps: 2, MessagesComplete: 4, MessagesIncomplete: 3, MessagesLost: 1}}, at))
	cs := tb.Conns()
	if len(cs) != 1 {
		t.Fatalf("%d connections", len(cs))
	}
	c := cs[0]
	if !c.BeforeOpen || c.StateName() != "closed:rst" || c.Client != "10.0.0.1:5" {
		t.Errorf("conn %+v", c)
	}
	if c.C2S.Complete != 4 || c.C2S.Flagged["gap"] != 1 || c.C2S.Flagged["before-window"] != 2 || c.C2S.Lost != 1 || c.C2S.BytesMissing != 25 || c.C2S.Gaps != 2 {
		t.Errorf("c2s %+v", c.C2S)
	}
	tot := tb.Totals()
	if tot.FlaggedTotal() != 3 || tot.MissingC2S != 25 || tot.Lossy != 1 || tot.Open != 0 {
		t.Errorf("totals %+v", tot)
	}
}

// Closed connections beyond the bound leave the list but not the totals.
func TestTableRetiresClosedConnections(t *testing.T) {
	tb, d := NewTable(), NewDrops()
	tb.Max = 2
	for i := range 5 {
		id := string(rune('a' + i))
		at := time.Unix(int64(100+i), 0)
		Apply(tb, d, eventItem(t, proto.KindOpen, id, proto.OpenEvent{Conn: id, Client: "c", Server: "s", Protocol: "tcp"}, at))
		Apply(tb, d, eventItem(t, proto.KindClose, id, proto.CloseEvent{Conn: id, Reason: "fin", S2C: proto.DirLoss{BytesMissing: 1}}, at))
	}
	if n := len(tb.Conns()); n != 2 {
		t.Errorf("%d connections listed, want 2", n)
	}
	tot := tb.Totals()
	if tot.Conns != 5 || tot.MissingS2C != 5 || tot.Retired != 3 {
		t.Errorf("totals %+v", tot)
	}
}

// A drop counter that goes down is a restart: the finished run's totals
// are kept.
func TestDropsAcrossRestart(t *testing.T) {
	d := NewDrops()
	at := time.Unix(1, 0)
	for _, body := range []string{
		`{"stage":"decap","at_ns":1,"kernel_drops":5,"drops":{"publish":{"batches":2,"frames":9,"bytes":900}},"tracked_vnis":1,"max_vnis":64}`,
		`{"stage":"decap","at_ns":2,"kernel_drops":7,"drops":{"publish":{"batches":2,"frames":9,"bytes":900}},"tracked_vnis":1,"max_vnis":64}`,
		`{"stage":"decap","at_ns":3,"kernel_drops":1,"tracked_vnis":1,"max_vnis":64}`,
	} {
		if ok, err := d.Add("tapline.events.decap.drops", []byte(body), at); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if ok, _ := d.Add("tapline.events.reassemble.ownership", []byte(`{}`), at); ok {
		t.Error("an ownership event taken as a drop report")
	}
	if _, err := d.Add("tapline.events.decap.drops", []byte(`{`), at); err == nil {
		t.Error("a malformed report accepted")
	}
	st := d.Stages()
	if len(st) != 1 || st[0].Counters["kernel_drops"] != 8 || st[0].Counters["drops.publish.frames"] != 9 || st[0].Counters["max_vnis"] != 0 {
		t.Fatalf("%+v", st)
	}
	if l := st[0].Line(); l != "drops.publish.batches 2, drops.publish.bytes 900, drops.publish.frames 9, kernel_drops 8" {
		t.Errorf("line %q", l)
	}
}

// The keys of the terminal view.
func TestScreenKeys(t *testing.T) {
	tb, d := NewTable(), NewDrops()
	now := time.Unix(200, 0)
	Apply(tb, d, eventItem(t, proto.KindOpen, "ws", proto.OpenEvent{Conn: "ws", Client: "1.1.1.1:1", Server: "2.2.2.2:2", Protocol: "websocket", Extensions: "permessage-deflate"}, now))
	Apply(tb, d, eventItem(t, proto.KindOpen, "raw", proto.OpenEvent{Conn: "raw", Client: "3.3.3.3:3", Server: "4.4.4.4:4", Protocol: "tcp"}, now.Add(-time.Second)))
	Apply(tb, d, eventItem(t, proto.KindGap, "raw", proto.GapEvent{Conn: "raw", Dir: proto.ServerToClient, Bytes: 99}, now.Add(-time.Second)))
	s := &Screen{Sort: "activity"}
	first := func() string {
		ls := s.Lines(tb, d, now, 200, 20)
		for _, l := range ls[4:] {
			if l != "" {
				return strings.Fields(l)[0]
			}
		}
		return ""
	}
	if f := first(); f != "1.1.1.1:1" {
		t.Errorf("by activity first %s", f)
	}
	s.Key("m")
	if f := first(); f != "3.3.3.3:3" || s.Sort != "missing" {
		t.Errorf("by missing first %s", f)
	}
	s.Key("l")
	if ls := strings.Join(s.Lines(tb, d, now, 200, 20), "\n"); strings.Contains(ls, "1.1.1.1:1") || !strings.Contains(ls, "1 shown") {
		t.Errorf("lossy only:\n%s", ls)
	}
	s.Key("c")
	for _, k := range []string{"/", "d", "e", "f", "x", "\x7f", "l", "\r"} {
		s.Key(k)
	}
	if s.Filter != "defl" {
		t.Errorf("filter %q", s.Filter)
	}
	if ls := strings.Join(s.Lines(tb, d, now, 200, 20), "\n"); strings.Contains(ls, "3.3.3.3:3") || !strings.Contains(ls, "websocket+deflate") {
		t.Errorf("filter defl:\n%s", ls)
	}
	for _, l := range s.Lines(tb, d, now, 40, 3) {
		if len([]rune(l)) > 40 {
			t.Errorf("line longer than the terminal: %q", l)
		}
	}
	if len(s.Lines(tb, d, now, 40, 3)) != 3 {
		t.Error("more lines than the terminal has rows")
	}
	s.Key("q")
	if !s.Quit {
		t.Error("q does not quit")
	}
}

// FuzzApply: any entry of any view stream is folded or counted as a
// problem, never a crash.
func FuzzApply(f *testing.F) {
	c := proto.Chunk{Conn: "c", VNI: 1, Dir: proto.ClientToServer, Seq: 1, Last: true, Opcode: "text", Complete: false, Missing: 3, Size: 3, Reason: "gap"}
	hdr, _ := json.Marshal(c.Header())
	f.Add(proto.MsgsStream, "tapline.msgs.1.1", hdr, []byte("abc"))
	f.Add(proto.MsgsStream, "tapline.msgs.1.1", []byte(`{"Tapline-Kind":["close"]}`), []byte(`{"conn":"c","reason":"fin","c2s":{"bytes_missing":4}}`))
	f.Add(proto.MsgsStream, "tapline.msgs.1.1", []byte(`{"Tapline-Kind":["gap"]}`), []byte(`{"conn":"c","dir":"s2c","bytes":-5}`))
	f.Add(proto.ResultsStream, "tapline.results.1.1", []byte(`{}`), []byte(`{"kind":"summary","conn":"c","summary":{"end":"close"}}`))
	f.Add(proto.EventsStream, "tapline.events.decap.drops", []byte(`{}`), []byte(`{"kernel_drops":3,"drops":{"x":{"batches":1}}}`))
	f.Fuzz(func(t *testing.T, stream, subject string, header, body []byte) {
		var h nats.Header
		_ = json.Unmarshal(header, &h)
		tb, d := NewTable(), NewDrops()
		tb.Max = 1
		for range 2 {
			Apply(tb, d, Item{Stream: stream, Subject: subject, Header: h, Data: body, At: time.Unix(1, 0)})
		}
		s := &Screen{Sort: "missing"}
		_ = s.Lines(tb, d, time.Unix(2, 0), 80, 10)
		NewReport(tb, d, nil, time.Unix(0, 0), time.Unix(2, 0)).WriteText(io.Discard)
		WriteMsg(io.Discard, subject, h, body, nil, SubOptions{})
	})
}

// A close frame is a control frame, not a message: the watch and report
// count the data messages only, as the close event does.
func TestTableCountsDataMessagesOnly(t *testing.T) {
	tb, d := NewTable(), NewDrops()
	at := time.Unix(100, 0)
	for i, op := range []string{proto.OpText, proto.OpPing, proto.OpBinary, proto.OpClose} {
		ch := proto.Chunk{Conn: "c1", VNI: 3, Client: "10.0.0.1:5", Server: "10.0.0.2:80", Dir: proto.ServerToClient, Seq: uint64(i + 1),
			Last: true, Opcode: op, Complete: true, Size: 2}
		Apply(tb, d, chunkItem(ch, "xx", at))
	}
	Apply(tb, d, eventItem(t, proto.KindClose, "c1", proto.CloseEvent{Conn: "c1", Reason: "fin",
		S2C: proto.DirLoss{MessagesComplete: 2, ControlFrames: 2}}, at))
	c := tb.Conns()[0]
	if c.S2C.Complete != 2 || c.S2C.FlaggedTotal() != 0 {
		t.Errorf("s2c %+v, want 2 complete messages", c.S2C)
	}
	if tot := tb.Totals(); tot.Complete != 2 {
		t.Errorf("totals %+v, want 2 complete messages", tot)
	}
	// Replay's results: the close frame sent is not counted, like EXACT.
	for i, op := range []string{proto.OpText, proto.OpBinary, proto.OpClose} {
		tb.AddResult(replay.Result{Kind: "message", Conn: "c1", Dir: proto.ServerToClient, Seq: uint64(i + 1), Result: "sent", Opcode: op}, at)
	}
	if c := tb.Conns()[0]; c.Replay["sent"] != 2 {
		t.Errorf("replay %v, want sent 2 (the data messages)", c.Replay)
	}
}

// Two decap instances report their own totals: the report sums the latest
// of each and names them, instead of taking the interleaved reports for
// restarts (which counted one instance's totals once per report).
func TestDropsTwoInstances(t *testing.T) {
	d := NewDrops()
	at := time.Unix(1, 0)
	for _, body := range []string{
		`{"stage":"decap","instance":"a/1/01","kernel_drops":5}`,
		`{"stage":"decap","instance":"b/1/02","kernel_drops":2}`,
		`{"stage":"decap","instance":"a/1/01","kernel_drops":6}`,
		`{"stage":"decap","instance":"b/1/02","kernel_drops":3}`,
	} {
		if ok, err := d.Add("tapline.events.decap.drops", []byte(body), at); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	st := d.Stages()
	if len(st) != 1 || st[0].Counters["kernel_drops"] != 9 || st[0].Reports != 4 {
		t.Fatalf("%+v, want kernel_drops 9 (6 + 3)", st)
	}
	if s := st[0].InstancesText(); s != "2 instances: a/1/01, b/1/02" {
		t.Errorf("instances %q", s)
	}
}
