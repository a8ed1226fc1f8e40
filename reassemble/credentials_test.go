package reassemble

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
)

// credentialSecrets are the production credentials of credentialUpgrade.
var credentialSecrets = []string{"prod-bearer-7f3a", "sess-91c2", "key-55aa", "qs-token-0b1d"}

// credentialUpgrade is a WebSocket upgrade carrying production's
// credentials in headers and in the query.
const credentialUpgrade = "GET /feed?symbol=BTC&access_token=qs-token-0b1d HTTP/1.1\r\nHost: prod.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Authorization: Bearer prod-bearer-7f3a\r\nCookie: session=sess-91c2\r\nX-Api-Key: key-55aa\r\nOrigin: https://prod.example\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// reassembleCredentials runs one WebSocket connection with credentials
// through the real decoder and returns everything stored on the messages
// stream (headers and bodies as text) and its open event.
func reassembleCredentials(t *testing.T, keep bool) (string, *proto.OpenEvent) {
	t.Helper()
	_, url := natstestRun(t)
	_, js := connect(t, url)
	cfg := testConfig(url, 1, "credentials")
	cfg.NewDecoder = nil
	cfg.KeepCredentials = keep
	startEngine(t, cfg)

	var mu sync.Mutex
	var all strings.Builder
	var open *proto.OpenEvent
	closed := false
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, proto.MsgsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(&all, "%v %s\n", m.Headers(), m.Data())
		switch proto.Kind(m.Headers().Get(proto.HdrKind)) {
		case proto.KindOpen:
			open = &proto.OpenEvent{}
			if err := jsonUnmarshal(m.Data(), open); err != nil {
				t.Error(err)
			}
		case proto.KindClose:
			closed = true
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()

	clock := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c := newSynthConn(t, "10.9.0.1:51000", "10.9.0.2:443", 5, &clock)
	b := newBatcher(t, js, 4)
	send := func(f framebatch.Frame) { b.add(&f, 0) }
	send(c.frame(true, "S", nil))
	send(c.frame(false, "SA", nil))
	send(c.frame(true, "PA", []byte(credentialUpgrade)))
	send(c.frame(false, "PA", []byte(upgradeResp)))
	send(c.frame(true, "PA", wsFrame(1, []byte(`{"subscribe":"BTC"}`), true)))
	send(c.frame(true, "FA", nil))
	send(c.frame(false, "FA", nil))
	b.flush()
	waitFor(t, "close event", func() bool { mu.Lock(); defer mu.Unlock(); return closed })
	mu.Lock()
	defer mu.Unlock()
	if open == nil {
		t.Fatal("no open event")
	}
	return all.String(), open
}

// TestOpenEventsCarryNoCredentials: by default production's Authorization,
// Cookie, X-Api-Key and access_token never reach the messages stream; the
// open event names what was removed and keeps everything else.
func TestOpenEventsCarryNoCredentials(t *testing.T) {
	stored, open := reassembleCredentials(t, false)
	for _, s := range credentialSecrets {
		if strings.Contains(stored, s) {
			t.Errorf("the messages stream holds %q:\n%s", s, stored)
		}
	}
	if got := strings.Join(open.RedactedHeaders, ","); got != "Authorization,Cookie,X-Api-Key" {
		t.Errorf("redacted headers %q", got)
	}
	if got := strings.Join(open.RedactedQuery, ","); got != "access_token" {
		t.Errorf("redacted query %q", got)
	}
	if open.Path != "/feed?symbol=BTC" || open.Headers["Origin"] != "https://prod.example" {
		t.Errorf("open event lost more than credentials: path %q headers %v", open.Path, open.Headers)
	}
}

// TestKeepCredentials: with --keep-credentials the open event carries the
// production values exactly.
func TestKeepCredentials(t *testing.T) {
	_, open := reassembleCredentials(t, true)
	if open.Headers["Authorization"] != "Bearer prod-bearer-7f3a" || open.Headers["Cookie"] != "session=sess-91c2" ||
		open.Headers["X-Api-Key"] != "key-55aa" || !strings.Contains(open.Path, "access_token=qs-token-0b1d") {
		t.Fatalf("credentials not kept: %+v", open)
	}
	if open.RedactedHeaders != nil || open.RedactedQuery != nil {
		t.Fatalf("nothing should be redacted: %+v", open)
	}
}
