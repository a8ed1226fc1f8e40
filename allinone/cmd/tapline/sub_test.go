package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
)

var titleRE = regexp.MustCompile(`(?m)^\[#(\d+) [^\]]+\] (\S+)$`)

// TestSubPipeline: `tapline sub` prints what the streams of a real
// pipeline hold (everything, the last N, headers readable, data bodies
// summarised with their SHA-256, JSON bodies as is, --body), then follows
// what arrives; usage errors exit 2.
func TestSubPipeline(t *testing.T) {
	p := startViewPipeline(t)
	p.feed(t)
	ctx := context.Background()
	st, err := p.js.Stream(ctx, proto.MsgsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := p.consumers(t)
	defer p.noNewConsumers(t, before)
	sub := func(args ...string) string {
		t.Helper()
		out, err := tapline(append([]string{"sub"}, append(args, "--nats-url", p.url)...)...).Output()
		if err != nil {
			t.Fatalf("tapline sub %v: %v", args, err)
		}
		return string(out)
	}

	// --all: every entry, in order, each data body summarised by its
	// hash.
	all := sub("tapline.msgs.>", "--all", "--no-follow")
	titles := titleRE.FindAllStringSubmatch(all, -1)
	if uint64(len(titles)) != info.State.Msgs {
		t.Fatalf("--all printed %d messages, the stream holds %d", len(titles), info.State.Msgs)
	}
	for i, m := range titles {
		if m[1] != fmt.Sprint(info.State.FirstSeq+uint64(i)) {
			t.Fatalf("message %d printed as #%s", i, m[1])
		}
	}
	var checked int
	var text string // the body of a text message
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		raw, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if raw.Header.Get(proto.HdrKind) != string(proto.KindData) || len(raw.Data) == 0 {
			continue
		}
		sum := sha256.Sum256(raw.Data)
		want := fmt.Sprintf("body: %d B sha256 %s", len(raw.Data), hex.EncodeToString(sum[:8]))
		if !strings.Contains(all, want) {
			t.Errorf("seq %d: no %q in the output", seq, want)
		}
		checked++
		if raw.Header.Get(proto.HdrOpcode) == proto.OpText && len(raw.Data) > 60 {
			text = string(raw.Data)
		}
	}
	if checked == 0 {
		t.Fatal("no data chunk in the stream")
	}
	for _, w := range []string{"Tapline-Kind: open", "Tapline-Kind: close", `"bytes_missing":`, "Tapline-Reason: gap", "Tapline-Client: 63.193.213.194:2564"} {
		if !strings.Contains(all, w) {
			t.Errorf("--all output lacks %q", w)
		}
	}

	// --last 3: the stream's last three entries.
	last := titleRE.FindAllStringSubmatch(sub("tapline.msgs.>", "--last", "3", "--no-follow"), -1)
	if len(last) != 3 || last[2][1] != fmt.Sprint(info.State.LastSeq) || last[0][1] != fmt.Sprint(info.State.LastSeq-2) {
		t.Errorf("--last 3 printed %v, want #%d..#%d", last, info.State.LastSeq-2, info.State.LastSeq)
	}
	// --last with a subject that is part of a stream: only its messages.
	res := sub("tapline.results.>", "--last", "2", "--no-follow")
	if n := len(titleRE.FindAllString(res, -1)); n != 2 || !strings.Contains(res, `"kind":`) {
		t.Errorf("--last 2 of the results printed %d messages:\n%s", n, res)
	}
	// --body: the text of a WebSocket message of ws-broker-json.pcap.
	if text == "" {
		t.Fatal("no text message longer than 60 bytes in the stream")
	}
	if strings.Contains(all, text) {
		t.Errorf("without --body a message body was printed whole")
	}
	if body := sub("tapline.msgs.>", "--all", "--no-follow", "--body"); !strings.Contains(body, text) {
		t.Errorf("--body did not print the body %q", text)
	}
	// A subject no stream holds: said so, exit 0.
	if out, err := tapline("sub", "nobody.here", "--no-follow", "--nats-url", p.url).CombinedOutput(); err != nil || !strings.Contains(string(out), "no stream holds nobody.here") {
		t.Errorf("sub of an unstreamed subject: %v %s", err, out)
	}

	// Following: what is published after the start is printed.
	cmd := tapline("sub", "tapline.msgs.>", "--last", "0", "--nats-url", p.url)
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
	following := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "following") {
				following <- sc.Text()
			}
		}
	}()
	select {
	case <-following:
	case <-time.After(60 * time.Second):
		t.Fatal("tapline sub never said it follows")
	}
	nc, err := nats.Connect(p.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m, err := proto.EventMsg(proto.MsgsSubject(5, 1), proto.KindGap, "live-conn", 5, "", proto.GapEvent{Conn: "live-conn", Dir: proto.ClientToServer, Bytes: 42})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var printed []string
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("tapline sub ended: %v", printed)
			}
			printed = append(printed, l)
			if strings.Contains(l, `"conn":"live-conn"`) {
				break wait
			}
		case <-deadline:
			t.Fatalf("the live entry was not printed: %v", printed)
		}
	}
	if len(titleRE.FindAllString(strings.Join(printed, "\n"), -1)) != 1 {
		t.Errorf("--last 0 printed more than the new entry: %v", printed)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("tapline sub after Ctrl-C: %v", err)
	}
}

// TestViewUsageErrors: the view commands' usage errors exit 2 with one
// line, an unreachable NATS exits 1 with one line naming it.
func TestViewUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"sub"},
		{"sub", "a.b", "c.d"},
		{"sub", "a.b", "--all", "--last", "3"},
		{"report", "stray"},
		{"report", "--since", "-1h"},
		{"watch", "--sort", "sideways"},
		{"watch", "stray"},
		{"report", "--nats-tls-cert", "only-half.pem"},
		{"sub", "a.b", "--connect-timeout", "0s"},
	} {
		out, err := tapline(args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("tapline %v: %v, output %q; want exit 2 with one line", args, err, out)
		}
	}
	port := freePort(t, "tcp")
	for _, c := range []string{"report", "sub", "watch"} {
		args := []string{c, "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", port), "--connect-timeout", "1s"}
		if c == "sub" {
			args = append(args, "tapline.msgs.>")
		}
		out, err := tapline(args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "cannot reach NATS at") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("tapline %v against nothing: %v, output %q; want exit 1 with one line", args, err, out)
		}
	}
	// A password in the URL is not shown.
	out, _ := tapline("report", "--nats-url", fmt.Sprintf("nats://user:pa55word@127.0.0.1:%d", port), "--connect-timeout", "1s").CombinedOutput()
	if strings.Contains(string(out), "pa55word") || !strings.Contains(string(out), "cannot reach NATS at nats://127.0.0.1:") {
		t.Errorf("the password is shown, or the server is not: %q", out)
	}
}
