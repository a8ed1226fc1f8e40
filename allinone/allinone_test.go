package allinone

import (
	"context"
	"errors"
	"flag"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto/stage"
)

// fakeStage mimics a stage module's Config/Register/Validate/Run.
type fakeStage struct {
	Common  stage.Common
	Listen  string
	Verbose bool
	Dest    string
	ran     atomic.Bool
	url     atomic.Value
}

func (f *fakeStage) adapter(name string) *stage.Descriptor {
	return &stage.Descriptor{
		Name:   name,
		Common: &f.Common,
		Register: func(fs *flag.FlagSet) {
			f.Common.Register(fs, ":9999")
			fs.StringVar(&f.Listen, "listen", ":4789", "listen address")
			fs.BoolVar(&f.Verbose, "verbose", false, "verbose")
			fs.StringVar(&f.Dest, "dest", "s3://bucket", "destination")
		},
		Validate: func() error {
			if f.Listen == "bad" {
				return errors.New("--listen is bad")
			}
			return nil
		},
		Run: func(ctx context.Context, d stage.Deps) error {
			nc, _, err := f.Common.Connect(ctx, name, d.Log)
			if err != nil {
				return err
			}
			defer nc.Close()
			f.url.Store(f.Common.NATSURL)
			d.Health.Add("nats", func() error {
				if !nc.IsConnected() {
					return nats.ErrConnectionClosed
				}
				return nil
			})
			f.ran.Store(true)
			<-ctx.Done()
			return nil
		},
	}
}

func newFake(t *testing.T) (*Config, *fakeStage, *fakeStage, *flag.FlagSet) {
	a, b := &fakeStage{}, &fakeStage{}
	c := &Config{Stages: []*stage.Descriptor{a.adapter("decap"), b.adapter("archive")}}
	fs := flag.NewFlagSet("tapline", flag.ContinueOnError)
	c.Register(fs)
	return c, a, b, fs
}

func TestPrefixedFlagsAndEnv(t *testing.T) {
	c, a, b, fs := newFake(t)
	for _, name := range []string{"decap.listen", "decap.verbose", "archive.dest", "nats-url", "http", "nats-listen"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s missing", name)
		}
	}
	for _, name := range []string{"decap.nats-url", "archive.http", "listen"} {
		if fs.Lookup(name) != nil {
			t.Errorf("flag --%s should not exist", name)
		}
	}
	t.Setenv("TAPLINE_ARCHIVE_DEST", "/tmp/x")
	t.Setenv("TAPLINE_SHARDS", "8")
	if err := stage.Parse(fs, []string{"--decap.listen", "127.0.0.1:1", "--decap.verbose", "--nats-listen", "127.0.0.1:0"}, stage.Aliases); err != nil {
		t.Fatal(err)
	}
	if a.Listen != "127.0.0.1:1" || !a.Verbose || b.Dest != "/tmp/x" || b.Listen != ":4789" {
		t.Fatalf("stage configs not set: %+v %+v", a, b)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if a.Common.Shards != 8 || b.Common.Shards != 8 || a.Common.HTTPAddr != "" {
		t.Fatalf("common not propagated: %+v", a.Common)
	}
	a.Listen = "bad"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "decap: --listen is bad") {
		t.Fatalf("validate: %v", err)
	}
}

func TestUnknownStage(t *testing.T) {
	c, _, _, fs := newFake(t)
	if err := stage.Parse(fs, []string{"--stages", "decap,nope"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("validate: %v", err)
	}
}

func TestRunEmbeddedSharesHealthAndStops(t *testing.T) {
	c, a, b, fs := newFake(t)
	store := t.TempDir()
	if err := stage.Parse(fs, []string{"--nats-listen", "127.0.0.1:0", "--nats-store", store}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d, _ := stage.TestDeps("tapline")
	ctx, cancel := context.WithCancel(context.Background())
	readyURL := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, c, d, func(u string) { readyURL <- u }) }()
	var url string
	select {
	case url = <-readyURL:
	case err := <-errc:
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !(a.ran.Load() && b.ran.Load()) || len(d.Health.Check()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stages not healthy: %v", d.Health.Check())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.url.Load() != url || b.url.Load() != url {
		t.Fatalf("stages got %v %v, server %s", a.url.Load(), b.url.Load(), url)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestFailingStageStopsAll(t *testing.T) {
	c, a, _, fs := newFake(t)
	c.Stages[1].Run = func(ctx context.Context, d stage.Deps) error { return errors.New("boom") }
	if err := stage.Parse(fs, []string{"--nats-listen", "127.0.0.1:0", "--nats-store", t.TempDir()}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d, _ := stage.TestDeps("tapline")
	err := Run(context.Background(), c, d, nil)
	if err == nil || !strings.Contains(err.Error(), "archive: boom") {
		t.Fatalf("Run: %v", err)
	}
	_ = a
}
