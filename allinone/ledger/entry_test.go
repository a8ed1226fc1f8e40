package ledger

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
)

// FuzzParseEntry: any headers and body decode to an entry of the kind
// the headers say, or to an error; never a crash, never an event without
// its body.
func FuzzParseEntry(f *testing.F) {
	c := proto.Chunk{Conn: "c", VNI: 1, Dir: proto.ServerToClient, Seq: 2, Last: true, Opcode: "binary", Complete: true, Size: 1}
	hdr, _ := json.Marshal(c.Header())
	f.Add(hdr, []byte("x"))
	f.Add([]byte(`{"Tapline-Kind":["open"]}`), []byte(`{"conn":"c","client":"a:1","server":"b:2","protocol":"websocket"}`))
	f.Add([]byte(`{"Tapline-Kind":["gap"]}`), []byte(`{"conn":"c","dir":"c2s","offset":5,"bytes":7}`))
	f.Add([]byte(`{"Tapline-Kind":["close"]}`), []byte(`{"conn":"c","reason":"fin"}`))
	f.Add([]byte(`{"Tapline-Kind":["close"]}`), []byte(`{"reason":"fin"}`))
	f.Add([]byte(`{"Tapline-Kind":["other"]}`), []byte(``))
	f.Fuzz(func(t *testing.T, header, body []byte) {
		var h nats.Header
		_ = json.Unmarshal(header, &h)
		e, err := ParseEntry(h, body)
		if err != nil {
			return
		}
		if e.Kind != proto.Kind(h.Get(proto.HdrKind)) {
			t.Fatalf("kind %q from header %q", e.Kind, h.Get(proto.HdrKind))
		}
		if e.Kind != proto.KindData && eventConn(e) == "" {
			t.Fatalf("event %+v without conn accepted", e)
		}
		s := NewStream()
		_ = s.Add(h, body, 1)
	})
}
