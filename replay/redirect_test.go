package replay

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRedirectsNotFollowed: a test target that answers the handshake with
// a redirect does not move production's messages elsewhere unless
// --follow-redirects; then it does.
func TestRedirectsNotFollowed(t *testing.T) {
	other := newHeaderServer(t)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.srv.URL+r.URL.Path, http.StatusFound)
	}))
	defer redirector.Close()
	target := "ws" + strings.TrimPrefix(redirector.URL, "http")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cfg, err := parseConfig(t, "--target", target)
	if err != nil {
		t.Fatal(err)
	}
	open := openEvent("/feed", "", nil)
	if s, err := dialWS(ctx, cfg, cfg.httpClient(), open, nil); err == nil {
		s.c.CloseNow()
		t.Fatal("the dial followed the redirect")
	} else if !strings.Contains(err.Error(), "302") {
		t.Errorf("dial error %q does not name the redirect status", err)
	}
	if n := len(other.requests()); n != 0 {
		t.Fatalf("the redirect's target got %d handshakes", n)
	}

	cfg, err = parseConfig(t, "--target", target, "--follow-redirects")
	if err != nil {
		t.Fatal(err)
	}
	s, err := dialWS(ctx, cfg, cfg.httpClient(), open, nil)
	if err != nil {
		t.Fatalf("--follow-redirects: %v", err)
	}
	s.c.CloseNow()
	if n := len(other.requests()); n != 1 {
		t.Fatalf("the redirect's target got %d handshakes, want 1", n)
	}
}
