package main

import (
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 25, 16, 0, 0, 0, time.UTC)
	cases := map[string]time.Time{
		"now":                         now,
		"-90m":                        now.Add(-90 * time.Minute),
		"2026-11-25T14:30:00Z":        time.Date(2026, 11, 25, 14, 30, 0, 0, time.UTC),
		"2026-11-25T15:30:00.5+01:00": time.Date(2026, 11, 25, 14, 30, 0, 5e8, time.UTC),
		"2026-11-25 14:30":            time.Date(2026, 11, 25, 14, 30, 0, 0, time.UTC),
		"2026-11-25":                  time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC),
		"1705584141.432193001":        time.Unix(1705584141, 432193001).UTC(),
		"1705584141":                  time.Unix(1705584141, 0).UTC(),
	}
	for in, want := range cases {
		got, err := parseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-", "1.2.3", "1.1234567891"} {
		if _, err := parseTime(in, now); err == nil {
			t.Errorf("parseTime(%q) accepted", in)
		}
	}
}
