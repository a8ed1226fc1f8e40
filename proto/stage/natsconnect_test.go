package stage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapline/tapline/proto/natstest"
)

// Connect reports the real cause of an unreachable server within
// --nats-connect-wait, as a ConfigError (exit 2) naming --nats-url.
func TestConnectUnreachable(t *testing.T) {
	c := Common{NATSURL: "nats://127.0.0.1:1", ConnectWait: time.Second}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	_, _, err := c.Connect(context.Background(), "t", log)
	if err == nil || !IsConfigError(err) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "--nats-url") {
		t.Fatalf("Connect to a closed port: %v", err)
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("the retry log hides the cause:\n%s", logs.String())
	}
	// Stopped while waiting: the context's error, promptly.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c.ConnectWait = 0
	if _, _, err := c.Connect(ctx, "t", log); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect after the context ended: %v", err)
	}
}

// MainCode exits 2 with one line for a ConfigError from run.
func TestMainCodeConfigErrorFromRun(t *testing.T) {
	var c Common
	fs, _ := newFS(&c)
	code := MainCode(fs, &c, []string{"--http", ""}, nil, func(context.Context, Deps) error {
		return fmt.Errorf("start: %w", ConfigError(errors.New("port taken (--port)")))
	})
	if code != 2 {
		t.Errorf("ConfigError from run: exit %d, want 2", code)
	}
}

// bogus:// and other URLs the client cannot dial fail validation.
func TestValidateNATSURL(t *testing.T) {
	for _, u := range []string{"bogus://x", "nats://", "nats://a:4222,,nats://b:4222", "http://h:4222"} {
		c := Common{NATSURL: u, Shards: 1, LogLevel: "info", LogFormat: "text"}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--nats-url") {
			t.Errorf("Validate(%q) = %v", u, err)
		}
	}
	for _, u := range []string{"nats://127.0.0.1:4222", "127.0.0.1:4222", "tls://h:4222,nats://u:p@h2:4222", "ws://h:8080", "wss://h"} {
		c := Common{NATSURL: u, Shards: 1, LogLevel: "info", LogFormat: "text"}
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%q) = %v", u, err)
		}
	}
}

// A clean stop (our own Close) logs no "nats disconnected err=<nil>".
func TestCleanCloseLogsNoDisconnect(t *testing.T) {
	_, url := natstest.Run(t)
	c := Common{NATSURL: url, ConnectWait: 5 * time.Second}
	var logs syncBuffer
	nc, _, err := c.Connect(context.Background(), "t", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	time.Sleep(100 * time.Millisecond) // the handler runs on the client's callback goroutine
	if strings.Contains(logs.String(), "disconnected") {
		t.Errorf("clean close logged:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the client's callback goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
