// Package redact masks credentials in what Tapline writes to logs and
// results: the password of a URL's user info, the values of query
// parameters and headers whose names look like credentials, and such URLs
// inside free text (error messages). It errs on the side of masking.
package redact

import (
	"net/url"
	"regexp"
	"strings"
	"sync"
)

// Mask replaces a secret value.
const Mask = "REDACTED"

// Name parts that make a query parameter or header a credential: matched
// as substrings of the lower-case name with '-' and '_' removed.
var secretParts = []string{
	"token", "secret", "passw", "passwd", "auth", "apikey", "credential",
	"session", "signature", "cookie", "jwt", "privatekey", "accesskey",
}

// Names that are credentials only as a whole (too short to match as parts).
var secretNames = map[string]bool{"key": true, "sig": true, "pwd": true, "pass": true, "code": true, "sid": true}

var extra struct {
	sync.RWMutex
	names []string
}

// SetExtra adds names (case-insensitive; each also matched as a part of a
// longer name) to those masked, e.g. from a --redact-names flag. It
// replaces the names of a previous call.
func SetExtra(names []string) {
	var n []string
	for _, s := range names {
		if s = normalize(s); s != "" {
			n = append(n, s)
		}
	}
	extra.Lock()
	extra.names = n
	extra.Unlock()
}

func normalize(name string) string {
	return strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.ToLower(strings.TrimSpace(name)))
}

// SecretName reports whether a query parameter or header name looks like
// it carries a credential (Authorization, Cookie, X-Api-Key, access_token,
// sig, …).
func SecretName(name string) bool {
	n := normalize(name)
	if n == "" {
		return false
	}
	if secretNames[n] {
		return true
	}
	for _, p := range secretParts {
		if strings.Contains(n, p) {
			return true
		}
	}
	extra.RLock()
	defer extra.RUnlock()
	for _, p := range extra.names {
		if strings.Contains(n, p) {
			return true
		}
	}
	return false
}

// Headers returns a copy of h with the values of secret-looking headers
// masked.
func Headers(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if SecretName(k) {
			v = Mask
		}
		out[k] = v
	}
	return out
}

// URL masks the password of s's user info and the values of its
// secret-looking query parameters. s may be a full URL or a path with a
// query ("/feed?token=…"). Text it cannot parse loses its query and user
// info entirely.
func URL(s string) string {
	if s == "" {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return crude(s)
	}
	changed := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), Mask)
			changed = true
		} else if looksLikeToken(u.User.Username()) {
			u.User = url.User(Mask)
			changed = true
		}
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = Mask
			changed = true
		} else {
			masked := false
			for k, vs := range q {
				if SecretName(k) {
					for i := range vs {
						vs[i] = Mask
					}
					masked = true
				}
			}
			if masked {
				u.RawQuery = q.Encode()
				changed = true
			}
		}
	}
	if u.Fragment != "" && strings.Contains(u.Fragment, "=") {
		// OAuth implicit flows put tokens in the fragment.
		if q, err := url.ParseQuery(u.Fragment); err == nil {
			for k := range q {
				if SecretName(k) {
					u.Fragment, u.RawFragment = Mask, ""
					changed = true
					break
				}
			}
		}
	}
	if !changed {
		return s
	}
	return strings.Replace(u.String(), url.QueryEscape(Mask), Mask, -1)
}

// looksLikeToken: a user name alone (no password) that is long and
// unspaced is usually a token (https://TOKEN@host).
func looksLikeToken(s string) bool { return len(s) >= 20 }

// crude masks what follows '?' and any user info of text that is not a
// parseable URL.
func crude(s string) string {
	if i := strings.IndexByte(s, '?'); i >= 0 {
		s = s[:i+1] + Mask
	}
	if i := strings.Index(s, "://"); i >= 0 {
		if at := strings.IndexByte(s[i+3:], '@'); at >= 0 && !strings.ContainsAny(s[i+3:i+3+at], "/?#") {
			s = s[:i+3] + Mask + s[i+3+at:]
		}
	}
	return s
}

// urlInText finds URLs (scheme://…) and query strings of paths inside text.
var urlInText = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s"'<>` + "`" + `]+|/[^\s"'<>?` + "`" + `]*\?[^\s"'<>` + "`" + `]+`)

// headerInText finds "Name: value" and "Name=value" pairs of secret-looking
// names in text, up to the end of the value (a comma, semicolon, quote or
// line end).
var headerInText = regexp.MustCompile(`(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api[-_]?key|x-auth-token|token|password)("?\s*[:=]\s*)("[^"]*"|[^\s,;"]+( [^\s,;"]+)?)`)

// Text masks the URLs, query strings and "Authorization: …"-like pairs in
// free text such as an error message.
func Text(s string) string {
	if s == "" {
		return s
	}
	s = urlInText.ReplaceAllStringFunc(s, URL)
	return headerInText.ReplaceAllString(s, "${1}${2}"+Mask)
}
