// Package allinone runs Tapline's four stages — decap, reassemble, replay
// and archive — in one process next to an embedded JetStream server: the
// local default that `make run` starts on a machine with nothing but Go.
//
// Every stage keeps its own configuration: its flags are registered on a
// private flag set and exposed on the all-in-one's flag set with the stage
// name as prefix (--decap.listen, --archive.dest, …; environment
// TAPLINE_DECAP_LISTEN, …). The common flags (NATS connection and
// authentication, --shards, stream limits, --http, logging) appear once,
// unprefixed, and are copied into every stage. All stages share one
// Prometheus registry and one /healthz.
package allinone

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tapline/tapline/allinone/testsystem"
	"github.com/tapline/tapline/archive"
	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natsserver"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble"
	"github.com/tapline/tapline/replay"
)

// HTTPDefault is the all-in-one's default /healthz and /metrics address.
const HTTPDefault = ":9100"

// localStreamBytes are the all-in-one's default stream sizes.
var localStreamBytes = map[string]int64{"frames-max-bytes": 4 << 30, "msgs-max-bytes": 4 << 30}

// stages are the constructors of the stages this binary runs, in
// pipeline order: each stage package describes itself once, for its own
// command and for the all-in-one.
var stages = []func() *stage.Descriptor{decap.Stage, reassemble.Stage, replay.Stage, archive.Stage}

// Available lists the stages of this binary, in pipeline order.
func Available() []string {
	var names []string
	for _, build := range stages {
		names = append(names, build().Name)
	}
	return names
}

// Config is the all-in-one's configuration.
type Config struct {
	// Common is copied into every stage (with the embedded server's URL
	// when Embedded, and without HTTPAddr: the all-in-one serves HTTP).
	Common stage.Common
	// Embedded runs a JetStream server in the process.
	Embedded bool
	// NATSListen is the embedded server's host:port (port 0: any free).
	NATSListen string
	// NATSStore is the embedded server's persistent store directory.
	NATSStore string
	// NATSMaxStore bounds the embedded server's JetStream file storage.
	NATSMaxStore int64
	// Only lists the stages to run (empty: all).
	Only stage.ListFlag

	// TestSystem, when set, is the address of the built-in test system run
	// in the process (--testsystem; see testsystem_run.go).
	TestSystem string

	// Stages are the compiled-in stages, in pipeline order.
	Stages []*stage.Descriptor

	fs *flag.FlagSet // the flag set Register filled
}

// NewConfig builds a configuration holding every compiled-in stage.
func NewConfig() *Config {
	c := &Config{}
	for _, build := range stages {
		c.Stages = append(c.Stages, build())
	}
	return c
}

// Stage returns the stage called name, or nil.
func (c *Config) Stage(name string) *stage.Descriptor {
	for _, s := range c.Stages {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// commonFlagNames are the flags stage.Common registers.
func commonFlagNames() map[string]bool {
	var c stage.Common
	fs := flag.NewFlagSet("common", flag.ContinueOnError)
	c.Register(fs, HTTPDefault)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// Register adds the all-in-one's flags to fs: the common flags once, the
// embedded server's, and every stage's own flags prefixed with
// "<stage>.".
func (c *Config) Register(fs *flag.FlagSet) {
	c.Common.Register(fs, HTTPDefault)
	// Smaller streams than a production cluster's, so that all four fit the
	// embedded server's store (JetStream reserves every stream's max bytes).
	for name, v := range localStreamBytes {
		f := fs.Lookup(name)
		if err := f.Value.Set(strconv.FormatInt(v, 10)); err != nil {
			panic(err)
		}
		f.DefValue = f.Value.String()
	}
	fs.BoolVar(&c.Embedded, "nats-embedded", true, "run an embedded JetStream server (the local default); false: use --nats-url")
	fs.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:4222", "listen address of the embedded JetStream server (port 0: any free port)")
	fs.StringVar(&c.NATSStore, "nats-store", "./.tapline/nats", "store directory of the embedded JetStream server (persists across restarts)")
	stage.SizeVar(fs, &c.NATSMaxStore, "nats-max-store", 16<<30, "maximum JetStream file storage of the embedded server (e.g. 16GiB)")
	fs.Var(&c.Only, "stages", "stages to run, comma-separated (default: all of "+strings.Join(Available(), ",")+")")
	c.registerTestSystem(fs)
	common := commonFlagNames()
	for _, s := range c.Stages {
		private := flag.NewFlagSet(s.Name, flag.ContinueOnError)
		s.Register(private)
		private.VisitAll(func(f *flag.Flag) {
			if common[f.Name] {
				return
			}
			fs.Var(f.Value, s.Name+"."+f.Name, f.Usage)
		})
	}
}

// selected returns the stages to run: those of --stages (default all)
// that are not off.
func (c *Config) selected() []*stage.Descriptor {
	var out []*stage.Descriptor
	for _, s := range c.Stages {
		if s.Off != nil && s.Off() != "" {
			continue
		}
		if len(c.Only) == 0 || slices.Contains(c.Only, s.Name) {
			out = append(out, s)
		}
	}
	return out
}

// OffStages lists the stages left out of this run and why.
func (c *Config) OffStages() map[string]string {
	off := map[string]string{}
	for _, s := range c.Stages {
		if s.Off != nil {
			if why := s.Off(); why != "" {
				off[s.Name] = why
			}
		}
	}
	return off
}

// natsListen splits NATSListen into host and port (-1 for any free port).
func (c *Config) natsListen() (string, int, error) {
	host, p, err := net.SplitHostPort(c.NATSListen)
	if err != nil {
		return "", 0, fmt.Errorf("--nats-listen %q: %v", c.NATSListen, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("--nats-listen %q: bad port", c.NATSListen)
	}
	if port == 0 {
		port = -1
	}
	return host, port, nil
}

// propagate copies the common configuration into every stage.
func (c *Config) propagate(natsURL string) {
	for _, s := range c.Stages {
		*s.Common = c.Common
		s.Common.HTTPAddr = ""
		if natsURL != "" {
			s.Common.NATSURL = natsURL
		}
	}
}

// Validate checks the all-in-one's and every selected stage's
// configuration and returns one clear error.
func (c *Config) Validate() error {
	if len(c.Stages) == 0 {
		return errors.New("no stage compiled into this binary")
	}
	for _, n := range c.Only {
		if c.Stage(n) == nil {
			return fmt.Errorf("--stages: unknown stage %q (have %s)", n, strings.Join(Available(), ", "))
		}
	}
	if err := c.applyTestSystem(); err != nil {
		return err
	}
	url := ""
	if c.Embedded {
		host, port, err := c.natsListen()
		if err != nil {
			return err
		}
		if c.NATSStore == "" {
			return errors.New("--nats-store is required with --nats-embedded")
		}
		if port < 0 {
			port = 4222
		}
		if sum := c.streamBytes(); sum > c.NATSMaxStore {
			return fmt.Errorf("the streams' max bytes add up to %d, more than --nats-max-store %d: lower --frames-max-bytes/--msgs-max-bytes or raise --nats-max-store", sum, c.NATSMaxStore)
		}
		url = "nats://" + net.JoinHostPort(host, strconv.Itoa(port))
	}
	c.propagate(url)
	for _, s := range c.selected() {
		if err := s.Common.Validate(); err != nil {
			return fmt.Errorf("%s: %v", s.Name, err)
		}
		if s.Validate != nil {
			if err := s.Validate(); err != nil {
				return fmt.Errorf("%s: %w (flags of this stage are prefixed --%s.)", s.Name, err, s.Name)
			}
		}
	}
	return nil
}

// streamBytes is the storage the four streams may reserve.
func (c *Config) streamBytes() int64 {
	var sum int64
	for name, l := range map[string]proto.StreamLimits{
		proto.FramesStream: c.Common.Streams.Frames, proto.MsgsStream: c.Common.Streams.Msgs,
		proto.ResultsStream: c.Common.Streams.Results, proto.EventsStream: c.Common.Streams.Events,
	} {
		if l.MaxBytes == 0 {
			l.MaxBytes = proto.DefaultLimits[name].MaxBytes
		}
		sum += l.MaxBytes
	}
	return sum
}

// StartNATS starts the embedded JetStream server of c.
func (c *Config) StartNATS() (*server.Server, error) {
	host, port, err := c.natsListen()
	if err != nil {
		return nil, err
	}
	if port > 0 {
		// The server reports a busy port only by not becoming ready:
		// check first so the error says what is wrong.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, stage.ConfigError(fmt.Errorf("embedded NATS: %v (is another NATS server running? use --nats-listen or --nats-embedded=false)", err))
		}
		ln.Close()
	}
	if err := os.MkdirAll(c.NATSStore, 0o755); err != nil {
		return nil, fmt.Errorf("--nats-store: %v", err)
	}
	srv, err := natsserver.Start(natsserver.Options{Host: host, Port: port, StoreDir: c.NATSStore, MaxStore: c.NATSMaxStore})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %v", err)
	}
	return srv, nil
}

// Run starts the embedded server (if configured) and every selected stage
// with shared metrics and health, blocks until ctx ends or a stage fails,
// lets every stage drain, then stops the server. ready, if not nil, is
// called with the NATS URL once every stage has been started. It returns
// nil on a clean stop.
func Run(ctx context.Context, c *Config, d stage.Deps, ready func(natsURL string)) error {
	url := c.Common.NATSURL
	if c.Embedded {
		srv, err := c.StartNATS()
		if err != nil {
			return err
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		url = srv.ClientURL()
		d.Health.Add("nats-server", func() error {
			if !srv.Running() || !srv.JetStreamEnabled() {
				return errors.New("embedded JetStream server not running")
			}
			return nil
		})
		d.Log.Info("embedded JetStream server", "url", url, "store", c.NATSStore)
		c.propagate(url)
	} else {
		c.propagate("")
	}

	if c.TestSystem != "" {
		ts, err := testsystem.Start(c.TestSystem, os.Stdout)
		if err != nil {
			return stage.ConfigError(fmt.Errorf("--testsystem %s: %v", c.TestSystem, err))
		}
		defer ts.Close()
		d.Log.Info("built-in test system", "url", ts.URL())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	sel := c.selected()
	for name, why := range c.OffStages() {
		d.Log.Info("stage off", "name", name, "why", why)
	}
	if len(sel) == 0 {
		return errors.New("no stage to run")
	}
	done := make(chan result, len(sel))
	for _, s := range sel {
		h := stage.Starting()
		d.Health.Add(s.Name, healthOf(h))
		sd := stage.Deps{Log: c.Common.Logger(s.Name), Metrics: d.Metrics, Health: h, Drain: d.Drain}
		running := d.Drain.Begin("the " + s.Name + " stage")
		go func() {
			defer running()
			err := s.Run(ctx, sd)
			if err == nil && ctx.Err() == nil {
				sd.Log.Warn("stage returned before shutdown")
			}
			done <- result{s.Name, err}
		}()
	}
	if ready != nil {
		ready(url)
	}
	var errs []error
	for range sel {
		r := <-done
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			d.Log.Error("stage failed", "failed", r.name, "err", r.err)
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.err))
			cancel()
		}
	}
	return errors.Join(errs...)
}

// healthOf reports a stage's failing checks as one error for the shared
// /healthz.
func healthOf(h *stage.Health) func() error {
	return func() error {
		failed := h.Check()
		if len(failed) == 0 {
			return nil
		}
		names := make([]string, 0, len(failed))
		for n, e := range failed {
			names = append(names, n+": "+e)
		}
		sort.Strings(names)
		return errors.New(strings.Join(names, "; "))
	}
}

// Logger is the all-in-one's own logger.
func (c *Config) Logger() *slog.Logger { return c.Common.Logger("tapline") }
