package replay

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
)

// TestResultsRedactCredentials: a production path with a token in its
// query and a target URL with a password reach the results (reasons of a
// failed connection, its target and summary) masked (with
// --forward-credentials, so that the token is dialed at all).
func TestResultsRedactCredentials(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newConv(1, "/feed?symbol=BTC&access_token=prod-secret-token")
	for i := range 2 {
		c.add(proto.ClientToServer, proto.OpText, []byte(fmt.Sprint(i)))
	}
	e.publish(c.entries("websocket")...)
	e.startReplay(nil, "--target", "ws://bob:hunter2@"+addr, "--forward-credentials", "--give-up", "1s", "--retry-min", "20ms", "--retry-max", "200ms")
	rs := e.waitResults(60*time.Second, "a failed summary", func(rs []resultMsg) bool {
		return countResults(rs, "summary", "failed") == 1
	})
	sawReason := false
	for _, r := range rs {
		b, _ := json.Marshal(r.body)
		all := string(b) + fmt.Sprint(r.h)
		for _, secret := range []string{"prod-secret-token", "hunter2"} {
			if strings.Contains(all, secret) {
				t.Fatalf("result holds %q: %s", secret, all)
			}
		}
		if strings.Contains(r.body.Reason, "access_token=REDACTED") {
			sawReason = true
		}
	}
	if !sawReason {
		t.Fatalf("no result names the (masked) dial URL; results: %d", len(rs))
	}
}
