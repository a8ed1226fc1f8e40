package views

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto/stage"
)

// conn is the NATS side of a view command: the common flags of every
// stage (--nats-url or NATS_URL, authentication, TLS) and a bound on how
// long to wait for the server.
type conn struct {
	common  stage.Common
	timeout time.Duration
}

func (c *conn) register(fs *flag.FlagSet) {
	// Only the NATS flags of the stages' common set: a view has no
	// streams to provision and no /healthz.
	all := flag.NewFlagSet("common", flag.ContinueOnError)
	c.common.Register(all, "")
	all.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "nats-") {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
	fs.DurationVar(&c.timeout, "connect-timeout", 10*time.Second, "how long to wait for the NATS server before giving up")
}

// connect dials NATS and waits until connected, or fails with one line
// naming the server and the last error.
func (c *conn) connect(ctx context.Context, name string) (*nats.Conn, jetstream.JetStream, error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The first connection is awaited here, for --connect-timeout, not by
	// the stages' --nats-connect-wait.
	nc, js, err := c.common.Connect(ctx, name, log, nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(c.timeout)
	for !nc.IsConnected() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			last := nc.LastError()
			nc.Close()
			if last == nil {
				last = fmt.Errorf("no answer within %s", c.timeout)
			}
			return nil, nil, fmt.Errorf("cannot reach NATS at %s: %v (set --nats-url or NATS_URL)", redact(c.common.NATSURL), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nc, js, nil
}

// redact removes the user information (passwords, tokens) from NATS URLs
// before they are shown.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// parse parses the flags with the stages' environment variables
// (TAPLINE_<FLAG>, NATS_URL) and checks the NATS configuration. It
// returns the exit code to use when parsing ends the command (0 after
// --help, 2 on a usage error), or -1.
func (c *conn) parse(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	if err := stage.Parse(fs, args, stage.Aliases); err != nil {
		if err == stage.ErrHelp {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	if err := c.common.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	if c.timeout <= 0 {
		fmt.Fprintf(stderr, "%s: --connect-timeout must be positive\n", fs.Name())
		return 2
	}
	return -1
}
