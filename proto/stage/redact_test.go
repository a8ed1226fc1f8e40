package stage

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// TestLoggerRedacts: credentials in log messages, string values, errors
// and URLs never reach the log, in both formats; --redact-names adds names.
func TestLoggerRedacts(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		c := Common{LogLevel: "info", LogFormat: format, RedactNames: ListFlag{"tenant"}}
		log := c.loggerTo(&buf, "replay").With("target", "ws://bob:hunter2@test:8080/")
		u, _ := url.Parse("wss://feed.example/s?access_token=tok-in-url")
		log.Warn("test system unavailable, retrying", "conn", "c1",
			"err", errors.New(`dial ws://test:8080/feed?token=tok-in-err: Get "http://test:8080/feed?token=tok-in-err": connection refused`),
			"path", "/feed?api_key=tok-in-path&tenant=acme", "url", u, "header", "Authorization: Bearer tok-in-header")
		out := buf.String()
		for _, secret := range []string{"hunter2", "tok-in-url", "tok-in-err", "tok-in-path", "tok-in-header", "acme"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s log holds %q: %s", format, secret, out)
			}
		}
		if !strings.Contains(out, "connection refused") || !strings.Contains(out, "test system unavailable") {
			t.Errorf("%s log lost its message: %s", format, out)
		}
	}
}
