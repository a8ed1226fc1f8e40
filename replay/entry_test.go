package replay

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/replaytest"
)

func TestParseEntry(t *testing.T) {
	m := replaytest.Message{Conn: "c1", VNI: 7, Shard: 3, Dir: proto.ClientToServer, Seq: 1, Opcode: proto.OpText, Payload: []byte("hi")}
	for c := range m.Chunks() {
		e, err := parseEntry(c.Subject, c.Header, c.Data)
		if err != nil {
			t.Fatal(err)
		}
		if e.conn != "c1" || e.vni != 7 || e.shard != 3 || string(e.data) != "hi" || !e.chunk.Last {
			t.Fatalf("%+v", e)
		}
	}
	o := replaytest.Open(3, proto.OpenEvent{Conn: "c1", VNI: 7, Path: "/x"})
	e, err := parseEntry(o.Subject, o.Header, o.Data)
	if err != nil || e.open.Path != "/x" || e.conn != "c1" {
		t.Fatal(e, err)
	}
	if _, err := parseEntry("tapline.msgs.7.3", nats.Header{"Tapline-Kind": {"nope"}}, nil); err == nil {
		t.Fatal("want error")
	}
}

func TestServerMatch(t *testing.T) {
	for _, c := range []struct {
		want, server string
		ok           bool
	}{
		{"10.0.0.1:443", "10.0.0.1:443", true},
		{"10.0.0.1", "10.0.0.1:443", true},
		{":443", "10.0.0.1:443", true},
		{":80", "10.0.0.1:443", false},
		{"::1", "[::1]:80", true},
	} {
		if got := serverMatch(c.want, c.server); got != c.ok {
			t.Errorf("serverMatch(%q,%q)=%v", c.want, c.server, got)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	m := replaytest.Message{Conn: "c1", VNI: 7, Dir: proto.ServerToClient, Seq: 2, Opcode: proto.OpBinary, Payload: []byte{1, 2}}
	for c := range m.Chunks() {
		f.Add(c.Subject, c.Header.Get(proto.HdrKind), c.Header.Get(proto.HdrSeq), c.Header.Get(proto.HdrOpcode), c.Header.Get(proto.HdrDir), c.Data)
	}
	f.Add("tapline.msgs.1.2", "open", "", "", "", []byte(`{"conn":"x","path":"/"}`))
	f.Add("tapline.msgs.1", "close", "", "", "", []byte(`{`))
	f.Fuzz(func(t *testing.T, subject, kind, seq, opcode, dir string, data []byte) {
		h := nats.Header{}
		for k, v := range (&proto.Chunk{Conn: "c", Dir: proto.ClientToServer, Seq: 1, Opcode: "text", Last: true}).Header() {
			h[k] = v
		}
		h.Set(proto.HdrKind, kind)
		h.Set(proto.HdrSeq, seq)
		h.Set(proto.HdrOpcode, opcode)
		h.Set(proto.HdrDir, dir)
		e, err := parseEntry(subject, h, data)
		if err == nil && e.conn == "" {
			t.Fatal("entry without connection accepted")
		}
	})
}
