package redact

import (
	"net/url"
	"sort"
	"strings"
)

// StripHeaders returns h without the headers whose names look like
// credentials (see SecretName), and the names removed, sorted. h itself is
// not changed; nil is returned when nothing is left.
func StripHeaders(h map[string]string) (kept map[string]string, removed []string) {
	for k, v := range h {
		if SecretName(k) {
			removed = append(removed, k)
			continue
		}
		if kept == nil {
			kept = make(map[string]string, len(h))
		}
		kept[k] = v
	}
	sort.Strings(removed)
	return kept, removed
}

// StripQuery returns the request target (a path with a query, or a URL)
// without its query parameters whose names look like credentials, and the
// names removed. Every other byte of the target is kept as it was (order
// and encoding of the other parameters included); a fragment is kept.
func StripQuery(target string) (string, []string) {
	q := strings.IndexByte(target, '?')
	if q < 0 {
		return target, nil
	}
	rest, frag := target[q+1:], ""
	if h := strings.IndexByte(rest, '#'); h >= 0 {
		rest, frag = rest[:h], rest[h:]
	}
	var kept, removed []string
	for _, part := range strings.Split(rest, "&") {
		name := part
		if eq := strings.IndexByte(part, '='); eq >= 0 {
			name = part[:eq]
		}
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if part != "" && SecretName(name) {
			removed = append(removed, name)
			continue
		}
		kept = append(kept, part)
	}
	if removed == nil {
		return target, nil
	}
	out := target[:q]
	if len(kept) > 0 {
		out += "?" + strings.Join(kept, "&")
	}
	return out + frag, removed
}
