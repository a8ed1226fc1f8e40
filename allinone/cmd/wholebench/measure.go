package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tcp"
)

// tapRun is one Tapline run: wall time capture -> every message stored,
// and each process's CPU and peak RSS.
type tapRun struct {
	wall  time.Duration
	usage map[string]usage
}

// runTapline runs nats-server, reassemble and decap --read (and archive
// with withArchive) on capture. backlog: decap publishes the whole file
// first and the time is reassemble's, from its start to the last entry.
func runTapline(ctx context.Context, dir, capture string, g genResult, want *uint64, backlog, withArchive bool) (tapRun, error) {
	os.RemoveAll(filepath.Join(dir, "jetstream")) // a store left by a killed run
	os.MkdirAll(dir, 0o755)
	defer os.RemoveAll(filepath.Join(dir, "jetstream"))
	s, err := startServer(ctx, dir)
	if err != nil {
		return tapRun{}, err
	}
	defer s.stop()
	procs := map[string]*proc{"nats-server": s.p}
	var reMetrics string
	startRe := func() error {
		p, m, err := s.stage(ctx, dir, "reassemble", append([]string{"--takeover-spread", "0"}, strings.Fields(*reArgs)...)...)
		procs["reassemble"], reMetrics = p, m
		return err
	}
	defer func() {
		for _, n := range []string{"decap", "archive", "reassemble"} {
			procs[n].stop()
		}
	}()
	if withArchive {
		p, _, err := s.stage(ctx, dir, "archive", "--store", filepath.Join(dir, "archive"))
		if err != nil {
			return tapRun{}, err
		}
		procs["archive"] = p
	}
	if !backlog {
		if err := startRe(); err != nil {
			return tapRun{}, err
		}
		time.Sleep(time.Second) // consumers created
	}
	t0 := time.Now()
	d, _, err := s.stage(ctx, dir, "decap", append([]string{"--read", capture}, strings.Fields(*decapArgs)...)...)
	if err != nil {
		return tapRun{}, err
	}
	procs["decap"] = d
	if backlog {
		if err := d.wait(10 * time.Minute); err != nil {
			return tapRun{}, err
		}
		t0 = time.Now()
		if err := startRe(); err != nil {
			return tapRun{}, err
		}
	}
	n, err := waitPublished(ctx, s, reMetrics, *want, g.messages, g.conns)
	if err != nil {
		return tapRun{}, err
	}
	r := tapRun{wall: time.Since(t0), usage: map[string]usage{}}
	if *want == 0 {
		*want = n
	}
	if err := checkExact(reMetrics, g.messages); err != nil {
		return r, err
	}
	if err := d.wait(2 * time.Minute); err != nil {
		return r, err
	}
	if withArchive {
		// The archive stores the last chunk at its age or at a stop.
		procs["archive"].stop()
	}
	for name, p := range procs {
		r.usage[name] = p.usage()
	}
	return r, nil
}

// runTool times an external command over the capture.
func runTool(dir string, args ...string) (time.Duration, error) {
	os.RemoveAll(filepath.Join(dir, "flows"))
	os.MkdirAll(filepath.Join(dir, "flows"), 0o755)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = filepath.Join(dir, "flows")
	cmd.Stdout = io.Discard
	errf, _ := os.Create(filepath.Join(dir, filepath.Base(args[0])+".err"))
	defer errf.Close()
	cmd.Stderr = errf
	t0 := time.Now()
	err := cmd.Run()
	took := time.Since(t0)
	os.RemoveAll(filepath.Join(dir, "flows"))
	return took, err
}

// runCeiling publishes the capture's bytes in 64 KiB messages to the
// frames stream and, from one pull consumer per shard, publishes each
// again to the messages stream and acknowledges it: JetStream doing the
// same storage work as the pipeline with no processing in between.
func runCeiling(ctx context.Context, dir, capture string) (time.Duration, error) {
	os.RemoveAll(filepath.Join(dir, "jetstream")) // a store left by a killed run
	os.MkdirAll(dir, 0o755)
	defer os.RemoveAll(filepath.Join(dir, "jetstream"))
	s, err := startServer(ctx, dir)
	if err != nil {
		return 0, err
	}
	defer s.stop()
	for _, name := range []string{proto.FramesStream, proto.MsgsStream} {
		cfg, _ := proto.StreamOptions{}.StreamConfig(name)
		if _, err := s.js.CreateStream(ctx, cfg); err != nil {
			return 0, err
		}
	}
	data, err := os.ReadFile(capture)
	if err != nil {
		return 0, err
	}
	const piece, shards = 64 << 10, 16
	total := (len(data) + piece - 1) / piece
	pubJS, _ := jetstream.New(s.nc, jetstream.WithPublishAsyncMaxPending(256))
	pubs := &retrying{js: pubJS}
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, shards+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < total; i++ {
			b := data[i*piece : min((i+1)*piece, len(data))]
			if err := pubs.add(proto.FramesSubject(0, i%shards), fmt.Sprint("f", i), b); err != nil {
				errs <- err
				return
			}
		}
		if err := pubs.finish(); err != nil {
			errs <- err
		}
	}()
	for sh := 0; sh < shards; sh++ {
		want := total / shards
		if sh < total%shards {
			want++
		}
		cons, err := s.js.CreateOrUpdateConsumer(ctx, proto.FramesStream, jetstream.ConsumerConfig{Durable: fmt.Sprint("ceil-", sh), FilterSubject: proto.FramesShardFilter(sh), AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			return 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			js, _ := jetstream.New(s.nc, jetstream.WithPublishAsyncMaxPending(256))
			pubs := &retrying{js: js}
			deadline := time.Now().Add(3 * time.Minute)
			for got := 0; got < want; {
				if time.Now().After(deadline) {
					errs <- fmt.Errorf("ceiling: shard %d consumed %d of %d batches", sh, got, want)
					return
				}
				mb, err := cons.Fetch(64, jetstream.FetchMaxWait(100*time.Millisecond))
				if err != nil {
					continue
				}
				for m := range mb.Messages() {
					md, _ := m.Metadata()
					if err := pubs.add(proto.MsgsSubject(0, sh), fmt.Sprint("m", md.Sequence.Stream), m.Data()); err != nil {
						errs <- err
						return
					}
					_ = m.Ack()
					got++
				}
			}
			if err := pubs.finish(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	took := time.Since(t0)
	select {
	case err := <-errs:
		return took, err
	default:
	}
	if n := s.stored(ctx, proto.MsgsStream); n != uint64(total) {
		return took, fmt.Errorf("ceiling: messages stream holds %d of %d", n, total)
	}
	return took, nil
}

// retrying publishes asynchronously and, at the end, sends again (same
// message id: stored once) whatever failed (timeouts on a loaded machine).
type retrying struct {
	js   jetstream.JetStream
	msgs []*nats.Msg
	futs []jetstream.PubAckFuture
}

func (r *retrying) add(subject, id string, data []byte) error {
	m := nats.NewMsg(subject)
	m.Header.Set(nats.MsgIdHdr, id)
	m.Data = data
	f, err := r.js.PublishMsgAsync(m)
	for errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		select {
		case <-r.js.PublishAsyncComplete():
		case <-time.After(time.Second):
		}
		f, err = r.js.PublishMsgAsync(m)
	}
	if err != nil {
		return err
	}
	r.msgs, r.futs = append(r.msgs, m), append(r.futs, f)
	return nil
}

func (r *retrying) finish() error {
	for try := 0; try < 10; try++ {
		<-r.js.PublishAsyncComplete()
		var failed []*nats.Msg
		for i, f := range r.futs {
			select {
			case <-f.Ok():
			case <-f.Err():
				failed = append(failed, r.msgs[i])
			}
		}
		if len(failed) == 0 {
			return nil
		}
		r.msgs, r.futs = nil, nil
		for _, m := range failed {
			if err := r.add(m.Subject, m.Header.Get(nats.MsgIdHdr), m.Data); err != nil {
				return err
			}
		}
	}
	return errors.New("ceiling: publishes kept failing")
}

// nullOut counts what a decoder emits.
type nullOut struct{ msgs int }

func (o *nullOut) Open(*proto.OpenEvent) {}
func (o *nullOut) Chunk(c *proto.Chunk, _ []byte) {
	if c.Last {
		o.msgs++
	}
}
func (o *nullOut) SwapDirections() {}

type engineHandler struct{ dec message.Decoder }

func (h *engineHandler) Data(d proto.Direction, b []byte, ts int64)      { h.dec.Data(d, b, ts) }
func (h *engineHandler) Gap(d proto.Direction, _, n, ts int64, _ string) { h.dec.Gap(d, n, ts) }
func (h *engineHandler) Close(_ string, ts int64, _, _ tcp.Loss)         { h.dec.Close(ts) }

// runEngine is reassemble's engine in this process on one goroutine
// (decap's capture reader, TCP reassembly, WebSocket decoding): its CPU
// seconds for the capture.
func runEngine(capture string, g genResult) (float64, error) {
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	out := &nullOut{}
	tr := tcp.New(tcp.Config{}, func(c *tcp.Conn) tcp.Handler {
		meta := message.Meta{Conn: c.ID, Client: c.Client().String(), Server: c.Server().String(), ClientKnown: c.SYN}
		return &engineHandler{dec: message.New(meta, out, message.Limits{})}
	})
	if err := decap.ReadCapture(capture, func(f *framebatch.Frame) error { tr.Packet(f); return nil }); err != nil {
		return 0, err
	}
	tr.CloseAll(tcp.CloseShutdown)
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if out.msgs != g.messages {
		return 0, fmt.Errorf("engine decoded %d of %d messages", out.msgs, g.messages)
	}
	return tv(after.Utime) + tv(after.Stime) - tv(before.Utime) - tv(before.Stime), nil
}
