package keys

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
)

// Main is `decap keys [flags] FILE|-`: it returns the exit status (0 done,
// 1 failed, 2 bad flags).
func Main(args []string) int {
	var cfg Config
	fs := flag.NewFlagSet("decap keys", flag.ContinueOnError)
	cfg.Register(fs)
	stage.SetArgs(fs, 2) // FILE, and a second one so validate can say "one FILE expected"
	validate := func() error {
		switch fs.NArg() {
		case 0:
			return errors.New("a key log FILE (or - for stdin) is required")
		case 1:
			cfg.Path = fs.Arg(0)
		default:
			return fmt.Errorf("one key log FILE expected, got %d arguments (flags go before FILE)", fs.NArg())
		}
		if !cfg.Follow && !httpGiven(fs) {
			// A one-shot run serves nothing unless asked to.
			cfg.Common.HTTPAddr = ""
		}
		return cfg.Validate()
	}
	return stage.MainCode(fs, &cfg.Common, args, validate, func(ctx context.Context, d stage.Deps) error {
		return Run(ctx, cfg, d)
	})
}

func httpGiven(fs *flag.FlagSet) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "http" })
	_, env := os.LookupEnv(stage.EnvName("http"))
	return given || env
}

// Run ships the key log of cfg to TAPLINE_KEYS. Without --follow it returns
// nil once every key line is stored, or an error after --timeout without
// progress (NATS unreachable). With --follow it runs until ctx ends, then
// tries for --drain-timeout to store the lines already read.
func Run(ctx context.Context, cfg Config, d stage.Deps) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	m := newMetrics(d.Metrics)
	// No reconnect buffer: while NATS is away publishes fail at once and
	// are retried, the file being the buffer, instead of piling up copies.
	// The first connection is not awaited either: without --follow,
	// --timeout bounds the wait for NATS (exit 1 naming it); with --follow,
	// reading goes on up to --buffer-bytes while NATS is still away.
	extra := []nats.Option{nats.ReconnectBufSize(-1), nats.RetryOnFailedConnect(true)}
	nc, js, err := cfg.Common.Connect(ctx, "tapline-decap-keys", d.Log, extra...)
	if err != nil {
		return err
	}
	defer nc.Close()
	d.Health.Add("nats", stage.NATSCheck(nc))
	p := &publisher{cfg: cfg, nc: nc, js: js, subject: proto.KeysSubject(cfg.Source), log: d.Log, m: m, progress: time.Now()}
	if !cfg.Follow {
		p.stall = cfg.Timeout
	}

	// The publisher outlives ctx by --drain-timeout, to store what was read.
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(cfg.DrainTimeout, pcancel) })
	defer stop()

	if cfg.Provision {
		if err := p.provision(pctx, d); err != nil {
			return err
		}
	}

	ch := make(chan *batch, cfg.BufferBytes/cfg.BatchBytes)
	r := newReader(cfg, d.Log, m, ch)
	r.queued = &p.read
	r.waiting = &atomic.Pointer[error]{}
	d.Health.Add("keylog", func() error {
		if e := r.waiting.Load(); e != nil {
			return *e
		}
		return nil
	})
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	readErr := make(chan error, 1)
	go func() {
		readErr <- r.run(rctx)
		close(ch)
	}()
	perr := p.run(pctx, ch)
	rcancel()
	rerr := <-readErr
	d.Log.Info("key log shipping ended", "lines_stored", p.stored.Load(), "key_lines_read", p.read.Load(), "subject", p.subject)
	switch {
	case perr != nil && errors.Is(perr, context.Canceled):
		return fmt.Errorf("stopped with %d of %d key lines not stored after --drain-timeout %s", p.read.Load()-p.stored.Load(), p.read.Load(), cfg.DrainTimeout)
	case perr != nil:
		return perr
	case rerr != nil && !errors.Is(rerr, context.Canceled):
		return rerr
	}
	return nil
}
