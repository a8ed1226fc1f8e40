package replay

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"flag"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/captures"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble"
	"github.com/tapline/tapline/replay/internal/testsys"
)

const capturesDir = "../testdata/captures"

// smallStreams keep several stages' streams within the test server's store.
var smallStreams = []string{"--frames-max-bytes", "1073741824", "--msgs-max-bytes", "1073741824",
	"--results-max-bytes", "67108864"}

var smallStreamOpts = proto.StreamOptions{Frames: proto.StreamLimits{MaxBytes: 1 << 30},
	Msgs: proto.StreamLimits{MaxBytes: 1 << 30}, Results: proto.StreamLimits{MaxBytes: 64 << 20}}

// capMsg is one message line of expected/*.wsmsgs.txt (tshark-derived).
type capMsg = captures.WSMsg

type capWant struct {
	server string
	msgs   map[proto.Direction][]capMsg
}

func readCapWant(t *testing.T, path string) capWant {
	t.Helper()
	e, err := captures.ReadWSMessages(path)
	if err != nil {
		t.Fatal(err)
	}
	w := capWant{server: e.Server, msgs: map[proto.Direction][]capMsg{}}
	for dir, msgs := range e.Msgs {
		for _, m := range msgs {
			if m.Kind == proto.OpText || m.Kind == proto.OpBinary {
				w.msgs[dir] = append(w.msgs[dir], m)
			}
		}
	}
	return w
}

// startReassemble runs the reassemble engine on the test server.
func startReassemble(t *testing.T, url string, shards int) {
	t.Helper()
	var cfg reassemble.Config
	fs := flag.NewFlagSet("reassemble", flag.ContinueOnError)
	cfg.Register(fs)
	if err := fs.Parse(append([]string{"--nats-url", url, "--http", "", "--shards", strconv.Itoa(shards),
		"--idle-timeout", "2s", "--takeover-spread", "0", "--pinned-ttl", "5s", "--instance-id", t.Name()}, smallStreams...)); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, _ := stage.TestDeps("reassemble")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reassemble.Run(ctx, cfg, d) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("reassemble.Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("reassemble did not stop")
		}
	})
}

// publishFrames publishes a capture as decap would: frame batches per
// subject, a few frames each.
func (e *env) publishFrames(path string, shards int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, e.js, smallStreamOpts, proto.FramesStream); err != nil {
		e.t.Fatal(err)
	}
	writers := map[string]*framebatch.Writer{}
	var order []string
	send := func(subj string) {
		w := writers[subj]
		if w.Frames() == 0 {
			return
		}
		if _, err := e.js.Publish(ctx, subj, append([]byte(nil), w.Bytes()...)); err != nil {
			e.t.Fatal(err)
		}
		w.Reset()
	}
	if err := decap.ReadCaptureShards(path, shards, func(f *framebatch.Frame, shard int) error {
		subj := proto.FramesSubject(f.VNI, shard)
		w := writers[subj]
		if w == nil {
			w = &framebatch.Writer{}
			writers[subj] = w
			order = append(order, subj)
		}
		w.Add(f)
		if w.Frames() >= 4 {
			send(subj)
		}
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	for _, s := range order {
		send(s)
	}
}

func sha1Prefix(p []byte) string {
	s := sha1.Sum(p)
	return hex.EncodeToString(s[:4])
}

// TestCapturesThroughReassemble runs every WebSocket capture through decap's
// capture reader, the reassemble engine and JetStream into replay: in dial
// mode the test system reads every client-to-server message, in listen mode
// a test client reads every server-to-client message, each byte-exact
// (length and SHA-1 prefix of tshark's expected/*.wsmsgs.txt) and in order.
func TestCapturesThroughReassemble(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(capturesDir, "ws-*.pcap*"))
	if len(files) == 0 {
		t.Fatal("no ws-* captures in " + capturesDir)
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := readCapWant(t, filepath.Join(capturesDir, "expected", name+".wsmsgs.txt"))
			e := newEnv(t)
			srv := testsys.NewWS(t)
			var mu sync.Mutex
			var listenAddr string
			startReassemble(t, e.url, 4)
			e.startReplay(nil, append([]string{"--target", srv.URL(), "--compare=false", "--durable", "dial"}, smallStreams...)...)
			e.startReplay(func(c *Config) {
				c.onListen = func(_, a string) { mu.Lock(); listenAddr = a; mu.Unlock() }
			}, append([]string{"--listen", "127.0.0.1:0=" + want.server, "--durable", "listen"}, smallStreams...)...)
			deadline := time.Now().Add(30 * time.Second)
			for {
				mu.Lock()
				a := listenAddr
				mu.Unlock()
				if a != "" {
					listenAddr = a
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("listen address not bound")
				}
				time.Sleep(10 * time.Millisecond)
			}
			client := testsys.Dial(t, "ws://"+listenAddr+"/")
			e.publishFrames(path, 4)

			check := func(what string, exp []capMsg, got func() []testsys.Record) {
				t.Helper()
				deadline := time.Now().Add(60 * time.Second)
				for len(got()) < len(exp) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				recs := got()
				if len(recs) != len(exp) {
					for _, r := range recs {
						t.Logf("%s got %v %d B", what, r.Type, r.Size)
					}
					t.Fatalf("%s: %d messages, want %d", what, len(recs), len(exp))
				}
				for i, m := range exp {
					r := recs[i]
					typ := websocket.MessageBinary
					if m.Kind == proto.OpText {
						typ = websocket.MessageText
					}
					if r.Type != typ || r.Size != int64(m.Len) || (m.Sha1 != "" && sha1Prefix(r.Payload) != m.Sha1) {
						t.Errorf("%s #%d: %v %d B sha1 %s, want %s %d B sha1 %s", what, i, r.Type, r.Size, sha1Prefix(r.Payload), m.Kind, m.Len, m.Sha1)
					}
				}
			}
			check("dial mode c2s", want.msgs[proto.ClientToServer], srv.Records)
			check("listen mode s2c", want.msgs[proto.ServerToClient], client.Records)
		})
	}
}
