package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// prodCredentials are what the production client authenticates with.
var prodCredentials = http.Header{
	"Authorization": {"Bearer prod-bearer-e2e-41c7"},
	"Cookie":        {"session=prod-sess-e2e-9d02"},
	"X-Api-Key":     {"prod-key-e2e-77b1"},
	"X-Custom":      {"kept"},
}

const prodQueryToken = "prod-qs-e2e-5e3a"

// credentialsPush has a production client with credentials in its
// headers and query push three messages through a pipeline started with
// extra; it returns the test system's side of the replayed connection.
func credentialsPush(t *testing.T, extra map[string][]string) (*Pipeline, *ServerConn) {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{})
	ext := StartServer(t, lab.Ext, mirrorlab.ExtAddr, nil, true)
	testSrv := StartServer(t, lab.Target, mirrorlab.TargetAddr, nil, true)
	p := NewPipeline(t, lab, PipelineOptions{Target: "ws://" + testSrv.Addr.String(), Extra: extra})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Dial(ctx, lab.Prod, "ws://"+ext.Addr.String()+"/feed?symbol=BTC&access_token="+prodQueryToken,
		&websocket.DialOptions{HTTPHeader: prodCredentials.Clone()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _, _ = c.Read(ctx) }()
	for i := range 3 {
		if err := c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	var got *ServerConn
	waitFor(t, 3*time.Minute, "the replayed connection", func() error {
		for _, sc := range testSrv.Conns() {
			if len(sc.Received()) >= 3 {
				got = sc
				return nil
			}
		}
		return errors.New("not yet")
	})
	return p, got
}

// TestCredentialsForwardedEndToEnd: with reassemble --keep-credentials and
// replay --forward-credentials the test system is dialed with production's
// credentials exactly.
func TestCredentialsForwardedEndToEnd(t *testing.T) {
	_, sc := credentialsPush(t, map[string][]string{
		"reassemble": {"--keep-credentials"}, "replay": {"--forward-credentials"}})
	for k, v := range prodCredentials {
		if sc.Header.Get(k) != v[0] {
			t.Errorf("test system got %s %q, want %q", k, sc.Header.Get(k), v[0])
		}
	}
	if sc.Query != "symbol=BTC&access_token="+prodQueryToken {
		t.Errorf("test system got query %q", sc.Query)
	}
}

// TestCredentialsNotStoredByDefault: with reassemble's default the messages
// stream holds none of production's credentials; replay
// --forward-credentials dials without them and says why in one log line.
func TestCredentialsNotStoredByDefault(t *testing.T) {
	p, sc := credentialsPush(t, map[string][]string{"replay": {"--forward-credentials"}})
	if sc.Header.Get("Authorization") != "" || sc.Header.Get("Cookie") != "" || sc.Header.Get("X-Api-Key") != "" ||
		sc.Query != "symbol=BTC" || sc.Header.Get("X-Custom") != "kept" {
		t.Errorf("test system got query %q headers %v", sc.Query, sc.Header)
	}
	es, err := p.Entries()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		s := fmt.Sprintf("%+v %+v", e.Open, e.Chunk)
		for _, secret := range []string{"prod-bearer-e2e-41c7", "prod-sess-e2e-9d02", "prod-key-e2e-77b1", prodQueryToken} {
			if strings.Contains(s, secret) {
				t.Errorf("the messages stream holds %q", secret)
			}
		}
	}
	if n := strings.Count(p.Procs["replay"].Tail(1000), "reassemble removed production's credentials"); n != 1 {
		t.Errorf("replay logged the removed credentials %d times, want once", n)
	}
}
