package reassemble

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// kindLog records, per connection, the kinds of its entries in stream
// order (with their stream sequence), from an ordered consumer.
type kindLog struct {
	mu    sync.Mutex
	kinds map[string][]string
	seqs  map[string][]uint64
	last  time.Time
	n     int
}

func logKinds(t *testing.T, js jetstream.JetStream) *kindLog {
	t.Helper()
	l := &kindLog{kinds: map[string][]string{}, seqs: map[string][]uint64{}, last: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, proto.MsgsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, _ := m.Metadata()
		h := m.Headers()
		id := h.Get(proto.HdrConn)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.kinds[id] = append(l.kinds[id], h.Get(proto.HdrKind))
		if md != nil {
			l.seqs[id] = append(l.seqs[id], md.Sequence.Stream)
		}
		l.last = time.Now()
		l.n++
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return l
}

// settled reports whether every connection seen has its close event and
// nothing new came for quiet (longer than the engine's idle timeout, so a
// connection that idles out has had its chance to close).
func (l *kindLog) settled(quiet time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ks := range l.kinds {
		if !contains(ks, string(proto.KindClose)) {
			return false
		}
	}
	return time.Since(l.last) > quiet
}

func contains(ks []string, k string) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// check returns what breaks the contract's order for each connection:
// exactly one open, first; exactly one close, last; data and gaps between.
func (l *kindLog) check() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var bad []string
	for id, ks := range l.kinds {
		var opens, closes int
		for _, k := range ks {
			switch proto.Kind(k) {
			case proto.KindOpen:
				opens++
			case proto.KindClose:
				closes++
			case proto.KindData, proto.KindGap:
			default:
				bad = append(bad, fmt.Sprintf("%s: unknown kind %q", id, k))
			}
		}
		if opens != 1 || closes != 1 || ks[0] != string(proto.KindOpen) || ks[len(ks)-1] != string(proto.KindClose) {
			show := ks
			if len(show) > 8 {
				show = append(append([]string{}, ks[:4]...), append([]string{"..."}, ks[len(ks)-4:]...)...)
			}
			bad = append(bad, fmt.Sprintf("%s: %d opens, %d closes, kinds %s (stream seqs %v...)",
				id, opens, closes, strings.Join(show, ","), l.seqs[id][:min(4, len(l.seqs[id]))]))
		}
	}
	return bad
}

// runOrder feeds one capture through decap's capture reader, JetStream
// and the engine with the real decoder, and returns the entries' kinds.
func runOrder(t *testing.T, path string) *kindLog {
	t.Helper()
	_, url := natstestRun(t)
	_, js := connect(t, url)
	l := logKinds(t, js)
	cfg := testConfig(url, 4, "order-"+filepath.Base(path))
	cfg.NewDecoder = nil // the real decoder
	startEngine(t, cfg)
	publishCapture(t, js, path, 4, 8)
	waitFor(t, "every connection closed", func() bool { return l.settled(cfg.IdleTimeout + time.Second) })
	return l
}

// TestGapBeforeOpenTruncatedHTTP: in tcp-gaps-truncated-http.pcap a
// connection's first stream bytes are missing, so the TCP layer reports a
// gap before the decoder has decided the connection; its gap event was
// published before its open event (stream seq 1 a gap, seq 2 the open).
// The open event must come first.
func TestGapBeforeOpenTruncatedHTTP(t *testing.T) {
	l := runOrder(t, filepath.Join(capturesDir, "tcp-gaps-truncated-http.pcap"))
	if len(l.kinds) == 0 {
		t.Fatal("no connections")
	}
	var gaps int
	for _, ks := range l.kinds {
		for _, k := range ks {
			if k == string(proto.KindGap) {
				gaps++
			}
		}
	}
	if gaps == 0 {
		t.Fatal("no gap events: the capture no longer exercises gaps")
	}
	for _, b := range l.check() {
		t.Error(b)
	}
}

// TestEventOrderAllCaptures is the order property over every capture:
// for every connection, open first, close last, data and gaps between.
func TestEventOrderAllCaptures(t *testing.T) {
	var files []string
	for _, pat := range []string{"*.pcap", "*.pcapng"} {
		f, _ := filepath.Glob(filepath.Join(capturesDir, pat))
		files = append(files, f...)
	}
	if len(files) < 10 {
		t.Fatalf("only %d captures in %s", len(files), capturesDir)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			l := runOrder(t, path)
			for _, b := range l.check() {
				t.Error(b)
			}
			t.Logf("%d connections, %d entries", len(l.kinds), l.n)
		})
	}
}
