package proto

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestSubjects(t *testing.T) {
	for _, s := range []string{FramesSubject(5569041, 3), MsgsSubject(0, 15), ResultsSubject(4294967295, 0)} {
		vni, shard, err := ParseSubject(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if !strings.HasSuffix(s, "."+itoa(int(vni))+"."+itoa(shard)) {
			t.Errorf("%s parsed as vni %d shard %d", s, vni, shard)
		}
	}
	if FramesShardFilter(7) != "tapline.frames.*.7" {
		t.Errorf("FramesShardFilter(7) = %s", FramesShardFilter(7))
	}
	for _, bad := range []string{"tapline.frames", "tapline.frames.x.1", "tapline.frames.1", "tapline.frames.1.-2", "other.frames.1.2", "tapline.frames.99999999999.1"} {
		if _, _, err := ParseSubject(bad); err == nil {
			t.Errorf("ParseSubject(%q) accepted", bad)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestChunkHeaderRoundTrip(t *testing.T) {
	in := Chunk{Conn: "c1", VNI: 42, Client: "10.0.0.1:5000", Server: "10.0.0.2:80", Dir: ServerToClient,
		Seq: 7, Index: 2, Last: true, Opcode: OpClose, Complete: false, Missing: 1234, Compressed: true,
		CloseCode: 1000, FirstNs: 1, LastNs: 2, Size: 3 << 20, Reason: ReasonGap}
	h := in.Header()
	if h.Get(HdrVersion) != Version || h.Get(nats.MsgIdHdr) != "c1/s2c/7/2" {
		t.Fatalf("headers %v", h)
	}
	out, err := ParseChunk(h)
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	h.Set(HdrDir, "sideways")
	if _, err := ParseChunk(h); err == nil {
		t.Error("bad direction accepted")
	}
	h = in.Header()
	h.Del(HdrSeq)
	if _, err := ParseChunk(h); err == nil || !strings.Contains(err.Error(), HdrSeq) {
		t.Errorf("missing seq: %v", err)
	}
}

func TestEventMsg(t *testing.T) {
	m, err := EventMsg(MsgsSubject(1, 2), KindClose, "c9", 1, "c9/close", CloseEvent{Conn: "c9", Reason: "fin", C2S: DirLoss{BytesSeen: 10, BytesImplied: 12, BytesMissing: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(HdrKind) != string(KindClose) || m.Header.Get(HdrConn) != "c9" {
		t.Fatalf("headers %v", m.Header)
	}
	var ev CloseEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.C2S.BytesMissing != 2 {
		t.Fatalf("body %s: %v", m.Data, err)
	}
	if _, err := ParseChunk(m.Header); err == nil {
		t.Error("an event parsed as a data chunk")
	}
}

func TestStreamConfigDefaults(t *testing.T) {
	cfg, err := StreamOptions{}.StreamConfig(FramesStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Subjects[0] != "tapline.frames.>" || cfg.MaxAge != DefaultLimits[FramesStream].MaxAge || cfg.Replicas != 1 {
		t.Fatalf("config %+v", cfg)
	}
	if _, err := (StreamOptions{}).StreamConfig("NOPE"); err == nil {
		t.Error("unknown stream accepted")
	}
}

func TestKeysSubject(t *testing.T) {
	for in, want := range map[string]string{
		"prod-1":       "tapline.keys.prod-1",
		"host.example": "tapline.keys.host_example",
		"a*b>c d":      "tapline.keys.a_b_c_d",
		"":             "tapline.keys._",
	} {
		if got := KeysSubject(in); got != want {
			t.Errorf("KeysSubject(%q) = %q, want %q", in, got, want)
		}
	}
	cfg, err := StreamOptions{}.StreamConfig(KeysStream)
	if err != nil || cfg.Subjects[0] != "tapline.keys.>" || cfg.MaxAge != DefaultLimits[KeysStream].MaxAge {
		t.Fatalf("keys stream config %+v, %v", cfg, err)
	}
}
