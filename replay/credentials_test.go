package replay

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/replay/replaytest"
)

// headerServer is a test system that records each upgrade request.
type headerServer struct {
	mu   sync.Mutex
	reqs []*http.Request
	srv  *httptest.Server
}

func newHeaderServer(t *testing.T) *headerServer {
	s := &headerServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true}) // production's Origin
		if err != nil {
			return
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, r)
		s.mu.Unlock()
		for {
			if _, _, err := c.Read(r.Context()); err != nil {
				return
			}
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *headerServer) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

// TestForwardCredentialsRemovedUpstream: --forward-credentials against open
// events whose credentials reassemble removed (no --keep-credentials):
// the connection is dialed without them (no placeholder is sent), and its
// summary result names what was not forwarded and why.
func TestForwardCredentialsRemovedUpstream(t *testing.T) {
	e := newEnv(t)
	ts := newHeaderServer(t)
	c := newConv(1, "/feed?symbol=BTC")
	open := replaytest.Open(c.shard, proto.OpenEvent{Conn: c.id, VNI: c.vni, Client: c.client, Server: c.server,
		Protocol: "websocket", Path: c.path, Host: "prod.example", FirstNs: 1,
		Headers:         map[string]string{"Origin": "https://prod.example"},
		RedactedHeaders: []string{"Authorization", "Cookie"}, RedactedQuery: []string{"access_token"}})
	c.add(proto.ClientToServer, proto.OpText, []byte("hello"))
	es := c.entries("websocket")
	es[0] = open
	e.publish(es...)
	e.startReplay(nil, "--target", "ws"+strings.TrimPrefix(ts.srv.URL, "http"), "--forward-credentials")
	rs := e.waitResults(60*time.Second, "a summary", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "match")+countResults(rs, "summary", "sent") == 1
	})
	var reason string
	for _, r := range rs {
		if r.body.Kind == "summary" {
			reason = r.body.Reason
		}
	}
	if !strings.Contains(reason, credentialsRemovedReason) || !strings.Contains(reason, "Authorization, Cookie, ?access_token") {
		t.Errorf("summary reason %q does not say which credentials were not forwarded", reason)
	}
	reqs := ts.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d upgrade requests", len(reqs))
	}
	r := reqs[0]
	if r.Header.Get("Authorization") != "" || r.Header.Get("Cookie") != "" || r.URL.RawQuery != "symbol=BTC" || r.Header.Get("Origin") != "https://prod.example" {
		t.Errorf("upgrade request: query %q headers %v", r.URL.RawQuery, r.Header)
	}
}
