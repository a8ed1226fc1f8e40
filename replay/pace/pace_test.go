package pace

import (
	"context"
	"testing"
	"time"
)

// fakeClock lets the pacer's decisions be checked without wall-clock waits.
type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time { return f.t }
func (f *fakeClock) sleep(_ context.Context, d time.Duration) error {
	f.t = f.t.Add(d)
	return nil
}

func newFake(cfg Config) (*Pacer, *fakeClock) {
	p := New(cfg)
	c := &fakeClock{t: time.Unix(1000, 0)}
	p.now, p.sleep = c.now, c.sleep
	return p, c
}

func TestOriginalKeepsGapsScaled(t *testing.T) {
	for _, speed := range []float64{1, 2, 0.5} {
		p, c := newFake(Config{Mode: Original, Speed: speed})
		start := c.t
		base := int64(5e9)
		for _, off := range []time.Duration{0, 100 * time.Millisecond, 100 * time.Millisecond, time.Second} {
			if err := p.WaitMessage(context.Background(), base+int64(off)); err != nil {
				t.Fatal(err)
			}
			want := time.Duration(float64(off) / speed)
			if got := c.t.Sub(start); got != want {
				t.Fatalf("speed %v: message at +%v sent at +%v, want +%v", speed, off, got, want)
			}
		}
		// A late message (earlier capture time) is sent at once.
		before := c.t
		if err := p.WaitMessage(context.Background(), base); err != nil {
			t.Fatal(err)
		}
		if c.t != before {
			t.Fatalf("late message waited %v", c.t.Sub(before))
		}
	}
}

func TestFastDoesNotWait(t *testing.T) {
	p, c := newFake(Config{Mode: Fast})
	start := c.t
	for i := range 5 {
		_ = p.WaitMessage(context.Background(), int64(i)*int64(time.Hour))
	}
	if c.t != start {
		t.Fatalf("fast mode waited %v", c.t.Sub(start))
	}
}

func TestParseMode(t *testing.T) {
	if _, err := ParseMode("slow"); err == nil {
		t.Fatal("want error")
	}
	if m, err := ParseMode("fast"); err != nil || m != Fast {
		t.Fatal(m, err)
	}
}
