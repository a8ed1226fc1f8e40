package views

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/term"

	"github.com/tapline/tapline/proto"
)

// streamNote is a reader's news for the status line.
type streamNote struct {
	stream string
	text   string // "caught up", "waiting", or an error
}

// follow reads the view streams from since on and then live into items,
// until ctx ends. A stream that does not exist yet is waited for.
func follow(ctx context.Context, js jetstream.JetStream, since time.Time, items chan<- Item, notes chan<- streamNote) {
	var wg sync.WaitGroup
	// The results and drop reports are read once the messages stream has
	// caught up, so that the history reads in order: a connection's open
	// before its replay results.
	msgsDone := make(chan struct{})
	var once sync.Once
	for _, s := range ViewStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s != proto.MsgsStream {
				select {
				case <-msgsDone:
				case <-ctx.Done():
					return
				}
			}
			for ctx.Err() == nil {
				err := Each(ctx, js, Read{Stream: s, Since: since, Follow: true}, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
					select {
					case items <- ItemOf(s, m, md):
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				}, func() {
					if s == proto.MsgsStream {
						once.Do(func() { close(msgsDone) })
					}
					select {
					case notes <- streamNote{s, "caught up"}:
					case <-ctx.Done():
					}
				})
				if ctx.Err() != nil {
					return
				}
				text := "waiting for the stream"
				if err != nil && !errors.Is(err, ErrNoStream) {
					text = err.Error()
				}
				select {
				case notes <- streamNote{s, text}:
				case <-ctx.Done():
					return
				}
				select {
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
}

// WatchMain is `tapline watch`: the live view of the connections (see
// the package doc). Exit 0 on q, Ctrl-C or SIGTERM (the terminal
// restored), 1 when NATS cannot be reached, 2 on bad usage.
func WatchMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tapline watch", flag.ContinueOnError)
	var c conn
	c.register(fs)
	since := fs.Duration("since", 15*time.Minute, "start from what the streams hold from this long ago, then follow")
	plain := fs.Bool("plain", false, "one line per change (open, gap, flagged message, close, replay failure, drop report) instead of the terminal view; the default when stdout is not a terminal")
	sortBy := fs.String("sort", "activity", "initial sort: activity, missing, flagged, client or opened")
	filter := fs.String("filter", "", "initial filter: show connections whose fields contain this text")
	lossy := fs.Bool("lossy", false, "show (or in line mode print) only connections with loss, flags or replay failures")
	maxConns := fs.Int("max-conns", 10000, "closed connections kept in the view (older ones count in the totals only)")
	if code := c.parse(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tapline watch: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	valid := false
	for _, o := range sortOrders {
		valid = valid || o == *sortBy
	}
	if !valid {
		fmt.Fprintf(stderr, "tapline watch: --sort must be one of %s, got %q\n", strings.Join(sortOrders, ", "), *sortBy)
		return 2
	}
	if *since < 0 {
		fmt.Fprintln(stderr, "tapline watch: --since must not be negative")
		return 2
	}
	out, isFile := stdout.(*os.File)
	tty := isFile && term.IsTerminal(int(out.Fd()))
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	nc, js, err := c.connect(ctx, "tapline-watch")
	if err != nil {
		fmt.Fprintf(stderr, "tapline watch: %v\n", err)
		return 1
	}
	defer nc.Close()
	items := make(chan Item, 4096)
	notes := make(chan streamNote, 16)
	from := time.Now().Add(-*since)
	followCtx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		follow(followCtx, js, from, items, notes)
	}()
	defer func() {
		// Let the readers delete their consumers before the connection
		// closes.
		stopFollow()
		select {
		case <-followed:
		case <-time.After(5 * time.Second):
		}
	}()
	t, d := NewTable(), NewDrops()
	t.Max = *maxConns
	scr := &Screen{Sort: *sortBy, Filter: *filter, Lossy: *lossy,
		Source: fmt.Sprintf("%s since %s", redact(c.common.NATSURL), from.Local().Format("15:04:05"))}
	if *plain || !tty {
		return watchPlain(ctx, t, d, scr, items, notes, stdout, stderr)
	}
	return watchTerminal(ctx, t, d, scr, items, notes, out, stderr)
}

// watchPlain prints one line per change until ctx ends or stdout fails
// (e.g. the reading end of the pipe went away).
func watchPlain(ctx context.Context, t *Table, d *Drops, scr *Screen, items <-chan Item, notes <-chan streamNote, stdout, stderr io.Writer) int {
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	caught := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return 0
		case n := <-notes:
			if n.text == "caught up" {
				caught[n.stream] = true
				if len(caught) == len(ViewStreams) {
					fmt.Fprintf(stderr, "tapline watch: %s; following\n", "caught up with the streams")
				}
			} else if n.stream == proto.MsgsStream || n.text != "waiting for the stream" {
				fmt.Fprintf(stderr, "tapline watch: %s: %s\n", n.stream, n.text)
			}
		case it := <-items:
			ch := Apply(t, d, it)
			if ch.What == "" || ch.Conn != nil && !scr.Match(ch.Conn) {
				continue
			}
			fmt.Fprintln(w, PlainLine(ch, it.At))
			if len(items) == 0 {
				if err := w.Flush(); err != nil {
					return 0
				}
			}
		}
	}
}

// watchTerminal runs the full-screen view: raw mode on the terminal,
// the alternate screen, redrawn on changes (at most 5 times a second), on
// keys and on resizes; everything restored on the way out.
func watchTerminal(ctx context.Context, t *Table, d *Drops, scr *Screen, items <-chan Item, notes <-chan streamNote, out *os.File, stderr io.Writer) int {
	ofd := int(out.Fd())
	ifd := int(os.Stdin.Fd())
	keys := make(chan string, 64)
	if term.IsTerminal(ifd) {
		old, err := term.MakeRaw(ifd)
		if err != nil {
			fmt.Fprintf(stderr, "tapline watch: terminal: %v\n", err)
			return 1
		}
		defer term.Restore(ifd, old)
		go readKeys(os.Stdin, keys)
	}
	fmt.Fprint(out, "\x1b[?1049h\x1b[?25l")
	defer fmt.Fprint(out, "\x1b[?25h\x1b[?1049l")
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)

	caught := map[string]string{}
	status := func() string {
		var waiting []string
		for _, s := range ViewStreams {
			if v := caught[s]; v != "caught up" {
				if v == "" {
					v = "reading"
				}
				waiting = append(waiting, s+" "+v)
			}
		}
		if len(waiting) == 0 {
			return "live"
		}
		return strings.Join(waiting, "; ")
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	dirty := true
	var buf strings.Builder
	draw := func() {
		w, h, err := term.GetSize(ofd)
		if err != nil || w <= 0 || h <= 0 {
			w, h = 80, 24
		}
		scr.Status = status()
		buf.Reset()
		buf.WriteString("\x1b[H")
		for i, l := range scr.Lines(t, d, time.Now(), w, h) {
			if i > 0 {
				buf.WriteString("\r\n")
			}
			buf.WriteString(l)
			buf.WriteString("\x1b[K")
		}
		buf.WriteString("\x1b[J")
		io.WriteString(out, buf.String())
		dirty = false
	}
	draw()
	last := time.Now()
	for !scr.Quit {
		select {
		case <-ctx.Done():
			return 0
		case k, ok := <-keys:
			if !ok {
				keys = nil // stdin ended: q no longer arrives, Ctrl-C does
				continue
			}
			if scr.Key(k) {
				draw()
			}
		case <-winch:
			draw()
		case n := <-notes:
			caught[n.stream] = n.text
			dirty = true
		case it := <-items:
			Apply(t, d, it)
			dirty = true
		case <-tick.C:
			// Ages move on: redraw at least every second.
			if dirty || time.Since(last) > time.Second {
				draw()
				last = time.Now()
			}
		}
	}
	return 0
}

// readKeys turns terminal input into key names: single bytes, "up" and
// "down" for the arrow keys, "\x1b" for Esc.
func readKeys(r io.Reader, keys chan<- string) {
	buf := make([]byte, 64)
	for {
		n, err := r.Read(buf)
		if err != nil {
			close(keys)
			return
		}
		b := buf[:n]
		for len(b) > 0 {
			switch {
			case len(b) >= 3 && b[0] == 0x1b && b[1] == '[' && (b[2] == 'A' || b[2] == 'B'):
				if b[2] == 'A' {
					keys <- "up"
				} else {
					keys <- "down"
				}
				b = b[3:]
			case len(b) >= 3 && b[0] == 0x1b && b[1] == '[':
				b = b[3:] // another escape sequence: ignored
			default:
				keys <- string(b[:1])
				b = b[1:]
			}
		}
	}
}
