package compare

import (
	"strings"
	"testing"
)

func msg(seq uint64, s string) Message {
	b := NewBuilder(seq, "text", 1<<20)
	b.Write([]byte(s))
	return b.Done()
}

func TestRulesJSONAndRegex(t *testing.T) {
	r, err := ParseRules([]string{"ts", "meta.id", "items.*.t", "$.list.0"}, []string{`req-[0-9]+`})
	if err != nil {
		t.Fatal(err)
	}
	a := r.Normalize([]byte(`{"ts": 1, "v": "req-17 ok", "meta": {"id": 5, "k": 1}, "items": [{"t": 1, "x": 2}], "list": [9, 8]}`))
	b := r.Normalize([]byte(`{"v":"req-99 ok","list":[7,8],"items":[{"x":2,"t":3}],"meta":{"k":1,"id":6},"ts":2}`))
	if string(a) != string(b) {
		t.Fatalf("normalized differ:\n%s\n%s", a, b)
	}
	if got := string(r.Normalize([]byte("not json req-1"))); got != "not json " {
		t.Fatalf("regex on text: %q", got)
	}
	if _, err := ParseRules([]string{"a..b"}, nil); err == nil {
		t.Fatal("want error for empty element")
	}
	if _, err := ParseRules(nil, []string{"("}); err == nil {
		t.Fatal("want error for bad regexp")
	}
}

func TestConnPairsInOrder(t *testing.T) {
	var outs []Outcome
	r, _ := ParseRules([]string{"ts"}, nil)
	c := NewConn(r, func(o Outcome) { outs = append(outs, o) })
	c.Got(msg(0, `{"ts":1,"a":1}`))
	c.Expect(msg(1, `{"ts":2,"a":1}`))
	c.Expect(msg(2, `{"a":2}`))
	c.Got(msg(0, `{"a":3}`))
	c.Expect(msg(3, `x`))
	s := c.Finish()
	if len(outs) != 3 || !outs[0].Match || outs[1].Match || outs[2].Reason != "no response from the test system" {
		t.Fatalf("outcomes %+v", outs)
	}
	if !strings.Contains(outs[1].Reason, "differs at byte") {
		t.Fatalf("reason %q", outs[1].Reason)
	}
	if s.Matched != 1 || s.Mismatched != 2 || s.Missing != 1 {
		t.Fatalf("summary %+v", s)
	}
}

func TestLargeComparedByDigest(t *testing.T) {
	mk := func(s string) Message {
		b := NewBuilder(1, "binary", 4)
		b.Write([]byte(s))
		return b.Done()
	}
	var outs []Outcome
	c := NewConn(Rules{}, func(o Outcome) { outs = append(outs, o) })
	c.Expect(mk("hello world"))
	c.Got(mk("hello world"))
	c.Expect(mk("hello world"))
	c.Got(mk("hello World"))
	if !outs[0].Match || outs[1].Match {
		t.Fatalf("%+v", outs)
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add([]byte(`{"a":{"b":[1,{"c":2}]},"d":"x"}`), "a.b.1.c", `\d`)
	f.Add([]byte(`[1,2,{"a":null}]`), "*.a", `.`)
	f.Add([]byte(`not json`), "a", `(`)
	f.Fuzz(func(t *testing.T, p []byte, path, re string) {
		r, err := ParseRules([]string{path}, []string{re})
		if err != nil {
			r, err = ParseRules([]string{path}, nil)
			if err != nil {
				return
			}
		}
		out := r.Normalize(append([]byte(nil), p...))
		// Deterministic: the same input gives the same output (map order
		// must not leak into the canonical JSON).
		if again := r.Normalize(append([]byte(nil), p...)); string(again) != string(out) {
			t.Fatalf("Normalize not deterministic: %q vs %q", out, again)
		}
	})
}
