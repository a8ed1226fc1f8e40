package decap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap/decode"
	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/stage"
)

// worker is the per-call scratch of the datagram handler: a decoder and
// the slices handed to the batcher. Workers are pooled, so each reader
// goroutine in practice keeps one.
type worker struct {
	dec    *decode.Decoder
	pkts   []decode.Packet
	frames []*framebatch.Frame
	shards []int
}

// listenAddrs are the udpin addresses for the configured ports.
func (c *Config) listenAddrs() []string {
	hosts := []string(c.ListenAddr)
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	var out []string
	for _, h := range hosts {
		for _, p := range []int{c.VXLANPort, c.GENEVEPort} {
			if p != 0 {
				out = append(out, net.JoinHostPort(h, strconv.Itoa(p)))
			}
		}
	}
	return out
}

// listen receives datagrams until ctx ends.
func (e *engine) listen(ctx context.Context) error {
	in := e.cfg.Intake
	if in == nil {
		var err error
		in, err = udpin.Open(udpin.Config{
			Addrs:       e.cfg.listenAddrs(),
			Sockets:     e.cfg.Sockets,
			RcvBuf:      e.cfg.RcvBuf,
			Batch:       e.cfg.ReadBatch,
			MaxDatagram: e.cfg.MaxDatagram,
			StopRead:    e.cfg.StopRead,
		}, e.d.Log)
		if err != nil {
			// A port another process holds is the user's to change.
			return stage.ConfigError(fmt.Errorf("%w (choose other ports with --vxlan-port/--geneve-port or --listen-addr)", err))
		}
		defer in.Close()
		e.d.Log.Info("listening", "vxlan_port", e.cfg.VXLANPort, "geneve_port", e.cfg.GENEVEPort, "addrs", e.cfg.listenAddrs())
	}
	e.intake.Store(in)
	e.listening.Store(true)
	if err := in.Register(e.d.Metrics); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
	}
	dcfg := e.decodeConfig()
	e.workers.New = func() any { return &worker{dec: decode.New(dcfg, e.stats)} }
	return in.Run(ctx, e.handle)
}

// handle decodes one batch of datagrams and adds the frames to the
// batcher under one lock. It is called concurrently by the reader
// goroutines; the datagrams' bytes are copied into the batches before it
// returns.
func (e *engine) handle(batch []udpin.Datagram) {
	w := e.workers.Get().(*worker)
	if cap(w.pkts) < len(batch) {
		w.pkts = make([]decode.Packet, len(batch))
	}
	pk := w.pkts[:len(batch)]
	w.frames, w.shards = w.frames[:0], w.shards[:0]
	for i := range batch {
		dg := &batch[i]
		p := &pk[i]
		if w.dec.Datagram(p, dg.Data, dg.Src.Addr(), dg.LocalPort, dg.TimeNs) {
			w.frames = append(w.frames, &p.Frame)
			w.shards = append(w.shards, e.sharder.Shard(&p.Key, p.HasFlow))
		}
	}
	if len(w.frames) > 0 {
		e.batcher.AddAll(w.frames, w.shards)
	}
	clear(w.frames) // drop references to the datagram buffers
	e.workers.Put(w)
}
