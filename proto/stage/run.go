package stage

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// Deps are what a stage's engine receives from its main: a logger, the
// registry its metrics go into, and the health checks /healthz runs. The
// all-in-one binary hands the same Deps (one registry, one /healthz) to
// every stage it runs.
type Deps struct {
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Health  *Health
	// Drain is where a stopping stage says what it still waits for (may
	// be nil); MainCode logs it while a stop takes long.
	Drain *Drain
}

// RunFunc is a stage engine started by Main.
type RunFunc func(ctx context.Context, d Deps) error

// Main is the body of every stage's main function. It parses args (the
// caller has registered the common flags and the stage's own on fs), calls
// validate, serves /healthz and /metrics, then calls run with a context
// cancelled on SIGINT or SIGTERM. It exits 0 on success and --help, 2 with
// one line on a configuration error (also one run returns as ConfigError,
// e.g. an unreachable --nats-url), and 1 when run fails.
func Main(fs *flag.FlagSet, c *Common, args []string, validate func() error, run RunFunc) {
	os.Exit(MainCode(fs, c, args, validate, run))
}

// MainCode is Main without os.Exit, for tests and multi-command binaries.
//
// `<stage> healthcheck [flags]` (HealthcheckCommand) does not run the stage:
// it probes the /healthz of the one running with the same --http and exits
// 0 when healthy, 1 otherwise.
func MainCode(fs *flag.FlagSet, c *Common, args []string, validate func() error, run RunFunc) int {
	if len(args) > 0 && args[0] == HealthcheckCommand {
		return healthcheckCode(fs, c, args[1:], os.Stderr)
	}
	if err := Parse(fs, args, Aliases); err != nil {
		if errors.Is(err, ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	if err := c.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	if validate != nil {
		if err := validate(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
			return 2
		}
	}
	ctx, stop := SignalContext()
	defer stop()
	reg := NewRegistry()
	d := Deps{Log: c.Logger(fs.Name()), Metrics: reg, Health: Starting(), Drain: &Drain{}}
	if err := ServeHTTP(ctx, c.HTTPAddr, Mux(d.Health, reg), d.Log); err != nil {
		fmt.Fprintf(os.Stderr, "%s: --http %s: %v\n", fs.Name(), c.HTTPAddr, err)
		return 2
	}
	stopped := make(chan struct{})
	go reportSlowStop(ctx, stopped, d.Drain, d.Log)
	err := run(ctx, d)
	close(stopped)
	if err != nil && !errors.Is(err, context.Canceled) {
		if IsConfigError(err) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
			return 2
		}
		d.Log.Error("stopped", "err", err)
		fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	d.Log.Info("stopped cleanly")
	return 0
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM, so stages
// drain and exit cleanly. A second signal during the drain exits the
// process at once (status 130), saying so on stderr: what was not stored
// or acknowledged is redelivered by JetStream.
func SignalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-ch:
			fmt.Fprintf(os.Stderr, "%s: second %s: exiting now without finishing the drain (what was not acknowledged is redelivered)\n", filepath.Base(os.Args[0]), s)
			os.Exit(130)
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
			cancel()
		})
	}
}

// TestDeps returns Deps for tests: a discarding logger unless verbose, a
// fresh registry, and empty health checks.
func TestDeps(name string) (Deps, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("stage", name)
	return Deps{Log: log, Metrics: reg, Health: &Health{}}, reg
}
