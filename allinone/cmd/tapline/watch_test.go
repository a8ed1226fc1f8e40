package main

import (
	"bufio"
	"fmt"
	"github.com/tapline/tapline/proto/mirrorlab"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tmux drives a program in a real terminal: its own server socket, one
// session of w×h.
type tmux struct {
	t      *testing.T
	socket string
}

func newTmux(t *testing.T) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		mirrorlab.Unavailable(t, "tmux not installed")
	}
	x := &tmux{t: t, socket: fmt.Sprintf("tapline-watch-%d-%d", os.Getpid(), time.Now().UnixNano())}
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", x.socket, "kill-server").Run() })
	return x
}

func (x *tmux) run(args ...string) string {
	x.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", x.socket}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %v: %v %s", args, err, out)
	}
	return string(out)
}

func (x *tmux) screen() string { return x.run("capture-pane", "-p", "-t", "w") }

// waitScreen waits until the pane shows every one of want.
func (x *tmux) waitScreen(what string, want ...string) string {
	x.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := x.screen()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(s, w)
		}
		if ok {
			return s
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("timed out waiting for %s (%q); the screen:\n%s", what, want, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitFile(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	waitFor(t, path, func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil && len(b) > 0
	})
	return strings.TrimSpace(string(b))
}

// rowOf is the screen line that starts with the client address.
func rowOf(screen, client string) string {
	for _, l := range strings.Split(screen, "\n") {
		if strings.HasPrefix(l, client+" ") {
			return l
		}
	}
	return ""
}

// TestWatchTerminal: `tapline watch` in a real terminal (tmux) on a real
// pipeline: it shows the connections with their loss, the keys sort and
// filter, and q or Ctrl-C quit with exit 0 and the terminal as it was
// (same stty settings, the alternate screen left, the cursor back).
func TestWatchTerminal(t *testing.T) {
	p := startViewPipeline(t)
	p.feed(t)
	s, _ := p.ledger(t)
	var lossy, clean string // client addresses
	var missing int64
	for _, c := range s.Closes() {
		k, _ := s.KeyOf(c.Conn)
		if c.C2S.BytesMissing+c.S2C.BytesMissing > 0 {
			lossy, missing = k.Client, c.C2S.BytesMissing
		} else {
			clean = k.Client
		}
	}
	if lossy == "" || clean == "" {
		t.Fatalf("want one lossy and one clean connection, closes %v", s.Closes())
	}

	before := p.consumers(t)
	defer p.noNewConsumers(t, before)
	for _, quit := range []string{"q", "C-c"} {
		t.Run("quit with "+quit, func(t *testing.T) {
			x := newTmux(t)
			dir := t.TempDir()
			script := fmt.Sprintf("stty -g > %[1]s/before; TAPLINE_TEST_AS_MAIN=1 %[2]s watch --nats-url %[3]s --since 1h; echo $? > %[1]s/rc; stty -g > %[1]s/after; echo back-at-the-shell; sleep 600",
				dir, os.Args[0], p.url)
			x.run("new-session", "-d", "-s", "w", "-x", "200", "-y", "30", "sh", "-c", script)

			scr := x.waitScreen("the view", "tapline watch", "live", lossy, clean, "sort: activity")
			row := rowOf(scr, lossy)
			for _, w := range []string{"tcp", "closed:fin", fmt.Sprint(missing), "gap"} {
				if !strings.Contains(row, w) {
					t.Errorf("lossy row %q lacks %q", row, w)
				}
			}
			if r := rowOf(scr, clean); !strings.Contains(r, "websocket") || !strings.Contains(r, "sent") {
				t.Errorf("clean row %q lacks websocket / replay sent", r)
			}

			// m: sort by missing bytes; the lossy connection comes first.
			x.run("send-keys", "-t", "w", "m")
			scr = x.waitScreen("sort by missing", "sort: missing")
			if li, ci := strings.Index(scr, lossy+" "), strings.Index(scr, clean+" "); li < 0 || ci < 0 || li > ci {
				t.Errorf("sorted by missing, the lossy connection is not first:\n%s", scr)
			}
			// l: only the lossy one.
			x.run("send-keys", "-t", "w", "l")
			scr = x.waitScreen("lossy only", "lossy only", "1 shown")
			if rowOf(scr, clean) != "" || rowOf(scr, lossy) == "" {
				t.Errorf("lossy only shows the wrong rows:\n%s", scr)
			}
			// c clears; / filters by substring.
			x.run("send-keys", "-t", "w", "c")
			x.waitScreen("cleared", "2 shown")
			x.run("send-keys", "-t", "w", "/")
			x.run("send-keys", "-t", "w", "-l", "websocket")
			x.waitScreen("typing the filter", "filter: websocket")
			x.run("send-keys", "-t", "w", "Enter")
			scr = x.waitScreen("filtered", `filter "websocket"`, "1 shown")
			if rowOf(scr, lossy) != "" || rowOf(scr, clean) == "" {
				t.Errorf("the filter shows the wrong rows:\n%s", scr)
			}

			if quit == "C-c" {
				// Live: a connection that arrives now shows up.
				x.run("send-keys", "-t", "w", "c")
				p.send(t, "ws-pmd-server-context-takeover.pcap", 7)
				scr = x.waitScreen("the live connection", "172.18.0.3:36852", "3 shown")
				if r := rowOf(scr, "172.18.0.3:36852"); !strings.Contains(r, "websocket+deflate") {
					t.Errorf("live row %q lacks websocket+deflate", r)
				}
			}
			x.run("send-keys", "-t", "w", quit)
			scr = x.waitScreen("back at the shell", "back-at-the-shell")
			if strings.Contains(scr, "tapline watch") {
				t.Errorf("the view is still on the screen after quitting:\n%s", scr)
			}
			if rc := waitFile(t, filepath.Join(dir, "rc")); rc != "0" {
				t.Errorf("exit status %s after %s", rc, quit)
			}
			if b, a := waitFile(t, filepath.Join(dir, "before")), waitFile(t, filepath.Join(dir, "after")); a != b {
				t.Errorf("terminal settings not restored:\nbefore %s\nafter  %s", b, a)
			}
			if c := x.run("display-message", "-p", "-t", "w", "#{cursor_flag} #{alternate_on}"); strings.TrimSpace(c) != "1 0" {
				t.Errorf("cursor shown / alternate screen: %q, want \"1 0\"", c)
			}
		})
	}
}

// TestWatchPlain: through a pipe `tapline watch` prints one line per
// change, the history of the window then what arrives live, and exits 0
// on SIGINT.
func TestWatchPlain(t *testing.T) {
	p := startViewPipeline(t)
	p.feed(t)
	s, _ := p.ledger(t)
	var lossyConn string
	var missing int64
	for _, c := range s.Closes() {
		if c.C2S.BytesMissing > 0 {
			lossyConn, missing = c.Conn, c.C2S.BytesMissing
		}
	}
	before := p.consumers(t)
	defer p.noNewConsumers(t, before)
	cmd := tapline("watch", "--nats-url", p.url, "--since", "1h")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	caught := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "caught up") {
				close(caught)
			}
		}
	}()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var got []string
	next := func(what string, match func(string) bool) string {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("watch ended before %s: %v", what, got)
				}
				got = append(got, l)
				if match(l) {
					return l
				}
			case <-deadline:
				t.Fatalf("no line for %s in %d lines:\n%s", what, len(got), strings.Join(got, "\n"))
			}
		}
	}
	closeLine := next("the lossy connection's close", func(l string) bool {
		return strings.Contains(l, " close ") && strings.Contains(l, lossyConn)
	})
	if !strings.Contains(closeLine, fmt.Sprintf("missing c2s %d B", missing)) {
		t.Errorf("close line %q does not state %d B missing", closeLine, missing)
	}
	var gaps, flagged int
	for _, l := range got {
		if strings.Contains(l, lossyConn) && strings.Contains(l, " gap ") {
			gaps++
		}
		if strings.Contains(l, lossyConn) && strings.Contains(l, " flagged ") {
			flagged++
		}
	}
	if gaps != len(s.Gaps()) || flagged == 0 {
		t.Errorf("%d gap lines for %d gap events, %d flagged lines", gaps, len(s.Gaps()), flagged)
	}
	select {
	case <-caught:
	case <-time.After(60 * time.Second):
		t.Fatal("watch never caught up")
	}
	// Live: a new connection shows up.
	p.send(t, "ws-pmd-server-context-takeover.pcap", 7)
	next("the live connection's open", func(l string) bool {
		return strings.Contains(l, " open ") && strings.Contains(l, "websocket+deflate")
	})
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("watch after SIGINT: %v", err)
	}
}
