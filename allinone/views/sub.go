package views

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/tapline/tapline/proto/stage"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
)

// SubOptions is how `tapline sub` prints messages.
type SubOptions struct {
	// Body prints every body (text as is, binary quoted) instead of a
	// summary of data bodies.
	Body bool
}

// jsonBody reports whether the body of a message on subject is one of
// Tapline's JSON documents (connection events, results, stage reports),
// printed as is; other bodies (message payloads, frame batches, TLS keys)
// are summarised unless --body is given.
func jsonBody(subject string, h nats.Header) bool {
	switch proto.Kind(h.Get(proto.HdrKind)) {
	case proto.KindOpen, proto.KindGap, proto.KindClose:
		return true
	}
	return strings.HasPrefix(subject, proto.ResultsPrefix+".") || strings.HasPrefix(subject, proto.EventsPrefix+".")
}

// WriteMsg prints one message: a title line (stream sequence and time
// when known), its headers sorted by name, and its body or a summary of
// it (size, SHA-256, and the first bytes when they are text).
func WriteMsg(w io.Writer, subject string, h nats.Header, data []byte, md *jetstream.MsgMetadata, o SubOptions) {
	if md != nil {
		fmt.Fprintf(w, "[#%d %s] %s\n", md.Sequence.Stream, md.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z"), subject)
	} else {
		fmt.Fprintf(w, "[%s] %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), subject)
	}
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range h[k] {
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	switch {
	case len(data) == 0:
		fmt.Fprintln(w, "  (empty body)")
	case o.Body && utf8.Valid(data):
		fmt.Fprintf(w, "%s\n", data)
	case o.Body:
		fmt.Fprintf(w, "%q\n", data)
	case jsonBody(subject, h) && utf8.Valid(data):
		fmt.Fprintf(w, "  %s\n", strings.TrimRight(string(data), "\n"))
	default:
		sum := sha256.Sum256(data)
		fmt.Fprintf(w, "  body: %d B sha256 %s%s\n", len(data), hex.EncodeToString(sum[:8]), preview(subject, data))
	}
	fmt.Fprintln(w)
}

// preview is the start of a text body, quoted; nothing for binary bodies
// and for TLS key lines (secrets).
func preview(subject string, data []byte) string {
	if strings.HasPrefix(subject, proto.KeysPrefix+".") {
		return ""
	}
	p := data
	if len(p) > 60 {
		p = p[:60]
	}
	for len(p) > 0 && !utf8.Valid(p) {
		p = p[:len(p)-1] // a rune cut at the end
	}
	if len(p) == 0 || strings.ContainsFunc(string(p), func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' && r != '\r' }) {
		return ""
	}
	s := fmt.Sprintf(" %q", p)
	if len(p) < len(data) {
		s += "…"
	}
	return s
}

// SubMain is `tapline sub SUBJECT [--all|--last N|--since D] [--body]
// [--no-follow]`: it prints the messages of any subject, from what the
// stream holding it already has and then live (core NATS, live only, when
// no stream holds the subject). Exit 0 at the end (Ctrl-C, or with
// --no-follow when what the stream held is printed), 1 when NATS cannot
// be read, 2 on bad usage.
func SubMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tapline sub", flag.ContinueOnError)
	var c conn
	c.register(fs)
	all := fs.Bool("all", false, "print everything the stream holds for SUBJECT, then follow")
	last := fs.Int("last", 10, "print the last N messages the stream holds for SUBJECT, then follow (0: only new ones)")
	since := fs.Duration("since", 0, "print what the stream holds for SUBJECT from this long ago, then follow")
	body := fs.Bool("body", false, "print every body instead of a summary (size, SHA-256) of data bodies")
	noFollow := fs.Bool("no-follow", false, "stop after what the stream holds now")
	var subject string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		subject, args = args[0], args[1:]
	}
	stage.SetArgs(fs, 2) // SUBJECT after the flags, and one more to name in the error
	if code := c.parse(fs, args, stderr); code >= 0 {
		return code
	}
	rest := fs.Args()
	if subject == "" && len(rest) > 0 {
		subject, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "tapline sub: unexpected argument %q (one SUBJECT, e.g. 'tapline.msgs.>')\n", rest[0])
		return 2
	}
	if subject == "" {
		fmt.Fprintln(stderr, "tapline sub: SUBJECT is required, e.g. tapline sub 'tapline.msgs.>'")
		return 2
	}
	modes := 0
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "all" || f.Name == "last" || f.Name == "since" {
			modes++
		}
	})
	if modes > 1 {
		fmt.Fprintln(stderr, "tapline sub: --all, --last and --since are exclusive")
		return 2
	}
	if *last < 0 || *since < 0 {
		fmt.Fprintln(stderr, "tapline sub: --last and --since must not be negative")
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	nc, js, err := c.connect(ctx, "tapline-sub")
	if err != nil {
		fmt.Fprintf(stderr, "tapline sub: %v\n", err)
		return 1
	}
	defer nc.Close()
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	o := SubOptions{Body: *body}

	stream, err := js.StreamNameBySubject(ctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if *noFollow {
			fmt.Fprintf(stderr, "tapline sub: no stream holds %s: nothing stored to print\n", subject)
			return 0
		}
		fmt.Fprintf(stderr, "tapline sub: no stream holds %s: printing what is published from now on\n", subject)
		ch := make(chan *nats.Msg, 1024)
		sub, err := nc.ChanSubscribe(subject, ch)
		if err != nil {
			fmt.Fprintf(stderr, "tapline sub: %v\n", err)
			return 2
		}
		defer sub.Unsubscribe()
		for {
			select {
			case <-ctx.Done():
				return 0
			case m := <-ch:
				WriteMsg(out, m.Subject, m.Header, m.Data, nil, o)
				if len(ch) == 0 {
					out.Flush()
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tapline sub: %v\n", err)
		return 1
	}
	r := Read{Stream: stream, Filter: subject, Follow: !*noFollow}
	switch {
	case *all:
	case *since > 0:
		r.Since = time.Now().Add(-*since)
	default:
		seq, err := StartOfLast(ctx, js, stream, subject, uint64(*last))
		if err != nil {
			fmt.Fprintf(stderr, "tapline sub: %v\n", err)
			return 1
		}
		r.StartSeq = seq
	}
	err = Each(ctx, js, r, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
		WriteMsg(out, m.Subject(), nats.Header(m.Headers()), m.Data(), md, o)
		if md.NumPending == 0 {
			return out.Flush()
		}
		return nil
	}, func() {
		out.Flush()
		if r.Follow {
			fmt.Fprintf(stderr, "tapline sub: %s: that is what %s holds; following\n", subject, stream)
		}
	})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "tapline sub: %v\n", err)
		return 1
	}
	return 0
}
