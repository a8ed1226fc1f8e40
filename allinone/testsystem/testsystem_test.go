package testsystem

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto/stage"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestReceivesAndPrints(t *testing.T) {
	var out syncBuf
	s, err := Start("127.0.0.1:0", &out)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := stage.Probe(ctx, s.Addr(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.Dial(ctx, s.URL()+"/v1/messages?x=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"hello":"world"}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, bytes.Repeat([]byte{7}, 100000)); err != nil {
		t.Fatal(err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	for len(s.Messages()) < 2 {
		select {
		case <-s.Changed():
		case <-ctx.Done():
			t.Fatalf("got %d messages", len(s.Messages()))
		}
	}
	m := s.Messages()
	if m[0].Type != "text" || m[0].Size != 17 || m[0].Path != "/v1/messages" || m[1].Type != "binary" || m[1].Size != 100000 {
		t.Fatalf("messages: %+v", m)
	}
	if !strings.Contains(out.String(), `{\"hello\":\"world\"}`) || s.Conns() != 1 {
		t.Fatalf("output: %s", out.String())
	}
}
