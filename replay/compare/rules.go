// Package compare matches the test system's responses with the production
// responses seen in the mirror, message by message, after applying the
// user's ignore rules (JSON paths and regular expressions).
package compare

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Rules are the ignore rules applied to both sides before comparing.
type Rules struct {
	// JSONPaths are dot-separated paths (a.b.c) removed from payloads that
	// are JSON documents; "*" matches any key or array element, a number an
	// array index.
	JSONPaths [][]string
	// Regexps are removed (replaced by nothing) from both payloads.
	Regexps []*regexp.Regexp
}

// ParseRules compiles --ignore-json-path and --ignore-regex values.
func ParseRules(jsonPaths, regexps []string) (Rules, error) {
	var r Rules
	for _, p := range jsonPaths {
		p = strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
		if p == "" {
			return r, fmt.Errorf("--ignore-json-path: empty path")
		}
		parts := strings.Split(p, ".")
		for _, s := range parts {
			if s == "" {
				return r, fmt.Errorf("--ignore-json-path %q: empty element", p)
			}
		}
		r.JSONPaths = append(r.JSONPaths, parts)
	}
	for _, s := range regexps {
		re, err := regexp.Compile(s)
		if err != nil {
			return r, fmt.Errorf("--ignore-regex %q: %v", s, err)
		}
		r.Regexps = append(r.Regexps, re)
	}
	return r, nil
}

// Empty reports whether no rule is set.
func (r Rules) Empty() bool { return len(r.JSONPaths) == 0 && len(r.Regexps) == 0 }

// Normalize applies the rules to one payload: JSON paths are removed when
// the payload is a JSON document (which is then re-encoded canonically,
// keys sorted), then every regexp match is removed.
func (r Rules) Normalize(p []byte) []byte {
	if len(r.JSONPaths) > 0 {
		if n, ok := r.normalizeJSON(p); ok {
			p = n
		}
	}
	for _, re := range r.Regexps {
		p = re.ReplaceAll(p, nil)
	}
	return p
}

func (r Rules) normalizeJSON(p []byte) ([]byte, bool) {
	t := bytes.TrimSpace(p)
	if len(t) == 0 || (t[0] != '{' && t[0] != '[') {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	for _, path := range r.JSONPaths {
		v = remove(v, path)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	return out, true
}

// remove deletes path from v and returns v.
func remove(v any, path []string) any {
	if len(path) == 0 {
		return v
	}
	key, rest := path[0], path[1:]
	switch x := v.(type) {
	case map[string]any:
		if len(rest) == 0 {
			if key == "*" {
				clear(x)
			} else {
				delete(x, key)
			}
			return x
		}
		if key == "*" {
			for k, c := range x {
				x[k] = remove(c, rest)
			}
		} else if c, ok := x[key]; ok {
			x[key] = remove(c, rest)
		}
		return x
	case []any:
		if key == "*" {
			if len(rest) == 0 {
				return []any{}
			}
			for i, c := range x {
				x[i] = remove(c, rest)
			}
			return x
		}
		i, err := strconv.Atoi(key)
		if err != nil || i < 0 || i >= len(x) {
			return x
		}
		if len(rest) == 0 {
			return append(x[:i:i], x[i+1:]...)
		}
		x[i] = remove(x[i], rest)
		return x
	}
	return v
}
