package reassemble

import (
	"crypto/sha1"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/captures"
)

// wantMsg is one message line of expected/*.wsmsgs.txt (tshark-derived).
type wantMsg = captures.WSMsg

func readWantMsgs(t *testing.T, path string) map[proto.Direction][]wantMsg {
	t.Helper()
	w, err := captures.ReadWSMessages(path)
	if err != nil {
		t.Fatal(err)
	}
	return w.Msgs
}

// TestCapturesWebSocket runs every WebSocket capture end to end: decap's
// capture reader, frame batches on TAPLINE_FRAMES, the engine with the
// real message decoder, TAPLINE_MSGS; the messages must be tshark's.
func TestCapturesWebSocket(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(capturesDir, "ws-*.pcap*"))
	if len(files) == 0 {
		t.Fatal("no ws-* captures")
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := readWantMsgs(t, filepath.Join(capturesDir, "expected", name+".wsmsgs.txt"))
			_, url := natstestRun(t)
			_, js := connect(t, url)
			col := collect(t, js)
			cfg := testConfig(url, 4, "ws-"+name)
			cfg.NewDecoder = nil // the real decoder
			startEngine(t, cfg)
			publishCapture(t, js, path, 4, 4)
			waitFor(t, "close event", func() bool { return len(col.closed()) >= 1 })
			conns := col.closed()
			if len(conns) != 1 {
				t.Fatalf("%d connections, want 1", len(conns))
			}
			c := conns[0]
			if c.open == nil || c.open.Protocol != "websocket" {
				t.Fatalf("open event %+v", c.open)
			}
			for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
				got, exp := c.msgs[dir], want[dir]
				if len(got) != len(exp) {
					for _, m := range got {
						t.Logf("%s #%d %s %d B complete %v", dir, m.seq, m.opcode, len(m.body), m.complete)
					}
					t.Fatalf("%s: %d messages, want %d", dir, len(got), len(exp))
				}
				for i, e := range exp {
					m := got[i]
					if m.opcode != e.Kind || len(m.body) != e.Len || !m.last {
						t.Errorf("%s #%d: %s %d B (last %v), want %s %d B", dir, i, m.opcode, len(m.body), m.last, e.Kind, e.Len)
						continue
					}
					if sum := sha1.Sum(m.body); e.Sha1 != "" && hex.EncodeToString(sum[:4]) != e.Sha1 {
						t.Errorf("%s #%d: digest differs", dir, i)
					}
					if e.Kind == proto.OpClose && m.closeCode != e.Code {
						t.Errorf("%s #%d: close code %d, want %d", dir, i, m.closeCode, e.Code)
					}
					if (e.Kind == proto.OpPing || e.Kind == proto.OpPong) && string(m.body) != e.Data {
						t.Errorf("%s #%d: %q, want %q", dir, i, m.body, e.Data)
					}
				}
			}
			for id, n := range c.chunks {
				if n != 1 {
					t.Errorf("chunk %s stored %d times", id, n)
				}
			}
		})
	}
}
