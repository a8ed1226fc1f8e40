package pmd

import (
	"bytes"
	"compress/flate"
	"fmt"
	"testing"
)

func TestParseParams(t *testing.T) {
	p := Parse("x-foo, permessage-deflate; server_no_context_takeover; client_max_window_bits=10; server_max_window_bits=\"12\"")
	if !p.Enabled || !p.ServerNoContextTakeover || p.ClientNoContextTakeover || p.ClientMaxWindowBits != 10 || p.ServerMaxWindowBits != 12 {
		t.Fatalf("%+v", p)
	}
	if m, b := p.Direction(false); m != TakeoverOff || b != 12 {
		t.Fatalf("server direction %v %d", m, b)
	}
	if m, b := p.Direction(true); m != TakeoverOn || b != 10 {
		t.Fatalf("client direction %v %d", m, b)
	}
	if Parse("").Enabled || Parse("permessage-deflate; client_max_window_bits").ClientMaxWindowBits != 15 {
		t.Fatal("defaults")
	}
}

// takeoverStream compresses msgs with one compressor kept across messages
// (context takeover), as browsers and coder/websocket do (the standard
// library's compressor references earlier messages across flushes).
func takeoverStream(t *testing.T, msgs [][]byte) [][]byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, 6)
	var out [][]byte
	for _, m := range msgs {
		w.Write(m)
		w.Flush()
		out = append(out, bytes.Clone(bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})))
		b.Reset()
	}
	return out
}

func TestContextTakeover(t *testing.T) {
	var msgs [][]byte
	for i := 0; i < 50; i++ {
		msgs = append(msgs, []byte(fmt.Sprintf(`{"seq":%d,"symbol":"ACME","bid":%d,"ask":%d,"venue":"XNAS"}`, i, 1000+i, 1001+i)))
	}
	comp := takeoverStream(t, msgs)
	f := NewInflater(TakeoverOn, 15)
	for i, c := range comp {
		got, err := feedSplit(f, c, 3)
		if err != nil || !bytes.Equal(got, msgs[i]) {
			t.Fatalf("message %d: %v %q", i, err, got)
		}
	}
	// Without the history (a fresh inflater, as after a loss) later
	// messages fail or inflate exactly — never to something else.
	fresh := NewInflater(TakeoverUnknown, 15)
	fails := 0
	for i, c := range comp[10:] {
		got, err := feedSplit(fresh, c, 7)
		if err != nil {
			fails++
			continue
		}
		if !bytes.Equal(got, msgs[10+i]) {
			t.Fatalf("message %d inflated to garbage", 10+i)
		}
	}
	if fails == 0 {
		t.Fatal("no message needed the lost history")
	}
	// Abort (a gap) empties the window: the next message must not use it.
	f2 := NewInflater(TakeoverOn, 15)
	feedSplit(f2, comp[0], 100)
	f2.Begin()
	f2.Abort()
	if got, err := feedSplit(f2, comp[2], 100); err == nil && !bytes.Equal(got, msgs[2]) {
		t.Fatal("garbage after abort")
	}
}

func TestSmallWindow(t *testing.T) {
	// A compressor limited to a 512-byte window inflates with a kept
	// window of 512 bytes.
	msgs := [][]byte{bytes.Repeat([]byte("abcdefgh"), 40), bytes.Repeat([]byte("abcdefgh"), 30)}
	comp := takeoverStream(t, msgs)
	f := NewInflater(TakeoverOn, 9)
	for i, c := range comp {
		got, err := feedSplit(f, c, 5)
		if err != nil || !bytes.Equal(got, msgs[i]) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}
