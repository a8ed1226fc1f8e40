package capturecmd

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/decap/afpacket"
	"github.com/tapline/tapline/decap/publish"
	"github.com/tapline/tapline/proto"
)

// Downtime is a span in which capture was not running (between the last
// heartbeat of the previous run and this start): frames of that span were
// never captured.
type Downtime struct {
	FromNs int64 `json:"from_ns"`
	ToNs   int64 `json:"to_ns"`
}

// DropsEvent is the JSON body `decap capture` publishes on
// tapline.events.decap.drops whenever something was lost since the
// previous report: decap's DropsEvent (Stage "decap capture"; Drops by
// reason: "spool_full" when the spool was full, "spool_error" when
// writing it failed; Kernel: the kernel's capture drops summed over the
// sockets; StopDropped: frames still queued when the shutdown's
// --stop-read ended; StopRefused: frames the kernel dropped once the
// shutdown began), the per-socket kernel counters, and, in the first report
// after a start, the span capture was not running.
type DropsEvent struct {
	decap.DropsEvent
	Iface   string               `json:"iface"`
	Sockets []afpacket.SockStats `json:"sockets"`
	Down    *Downtime            `json:"not_running,omitempty"`
}

func (e *engine) report(ctx context.Context, down *Downtime) {
	if down != nil {
		e.publishDrops(down, false)
	}
	t := time.NewTicker(e.cfg.EventsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.publishDrops(nil, false)
		}
	}
}

// publishDrops publishes a DropsEvent when a loss count grew since the
// last one (or down is set).
func (e *engine) publishDrops(down *Downtime, final bool) {
	ev := DropsEvent{Iface: e.cfg.Iface, Sockets: e.cap.Stats(), Down: down}
	ev.Stage, ev.Instance, ev.AtNs = "decap capture", e.instance, time.Now().UnixNano()
	ev.Drops = map[string]publish.DropCount{}
	var n uint64
	e.drops.mu.Lock()
	for r, c := range e.drops.m {
		ev.Drops[r] = publish.DropCount{Batches: c.batches, Frames: c.frames, Bytes: c.bytes}
		n += uint64(c.frames)
	}
	e.drops.mu.Unlock()
	for _, s := range ev.Sockets {
		ev.Kernel += s.KernelDrops
		ev.Oversize += s.Cut
		ev.StopDropped += s.StopDropped
		ev.StopRefused += s.StopRefused
	}
	n += ev.Kernel + ev.Oversize + ev.StopDropped + ev.StopRefused
	if down == nil && n == e.lastDrops.Load() {
		return
	}
	e.lastDrops.Store(n)
	body, _ := json.Marshal(ev)
	m := nats.NewMsg(proto.EventsSubject("decap", "drops"))
	m.Header.Set(proto.HdrVersion, proto.Version)
	m.Data = body
	if err := e.nc.PublishMsg(m); err != nil {
		e.d.Log.Warn("publishing drop report failed", "err", err)
	}
	e.d.Log.Warn("loss report", "report", string(body), "final", final)
}

// register adds the capture's metrics.
func (e *engine) register() error {
	g := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	c := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{
		c("tapline_capture_frames_total", "Frames captured.", func() float64 { return float64(e.frames.Load()) }),
		c("tapline_capture_bytes_total", "Bytes captured (wire length).", func() float64 { return float64(e.bytes.Load()) }),
		c("tapline_capture_not_ip_total", "Captured frames that are not IP (published on shard 0).", func() float64 { return float64(e.notIP.Load()) }),
		g("tapline_capture_spool_bytes", "Bytes of frame batches in the spool not yet acknowledged by JetStream.", func() float64 { return float64(e.sp.Stats().Pending) }),
		g("tapline_capture_spool_peak_bytes", "Peak of tapline_capture_spool_bytes since start.", func() float64 { return float64(e.sp.Stats().Peak) }),
		g("tapline_capture_spool_records", "Frame batches in the spool not yet acknowledged.", func() float64 { return float64(e.sp.Stats().Records) }),
		g("tapline_capture_spool_limit_bytes", "--spool-bytes.", func() float64 { return float64(e.cfg.SpoolBytes) }),
		g("tapline_capture_spool_head_age_seconds", "How long the oldest batch not yet acknowledged has waited.", func() float64 { return e.sp.Stats().HeadAge.Seconds() }),
		c("tapline_capture_upload_bytes_total", "Bytes of frame batches JetStream acknowledged.", func() float64 { return float64(e.up.Bytes.Load()) }),
		c("tapline_capture_upload_batches_total", "Frame batches JetStream acknowledged.", func() float64 { return float64(e.up.Records.Load()) }),
		c("tapline_capture_upload_retries_total", "Upload windows sent again after a failure (NATS down, timeout).", func() float64 { return float64(e.up.Retries.Load()) }),
		g("tapline_capture_upload_rate_limit_bytes", "--upload-rate in bytes per second (0: no cap).", func() float64 { return float64(e.cfg.UploadRate) }),
		g("tapline_capture_upload_delay_seconds", "Capture-to-acknowledgement delay of the last uploaded batch (spool wait included).", func() float64 { return time.Duration(e.up.LastDelayNs.Load()).Seconds() }),
		g("tapline_capture_upload_delay_max_seconds", "Maximum of tapline_capture_upload_delay_seconds since start.", func() float64 { return time.Duration(e.up.MaxDelayNs.Load()).Seconds() }),
		g("tapline_capture_max_cpu", "--max-cpu (GOMAXPROCS).", func() float64 { return float64(e.cfg.MaxCPU) }),
		g("tapline_capture_memory_limit_bytes", "--max-memory (Go memory limit).", func() float64 { return float64(e.cfg.MaxMemory) }),
		c("tapline_capture_dropped_frames_total", "Frames lost before the spool (full spool or spool write error).", func() float64 {
			e.drops.mu.Lock()
			defer e.drops.mu.Unlock()
			var n int64
			for _, r := range e.drops.m {
				n += r.frames
			}
			return float64(n)
		}),
		&sockCollector{e: e},
	}
	for _, x := range cs {
		if err := e.d.Metrics.Register(x); err != nil {
			return err
		}
	}
	return nil
}

// sockCollector exports the kernel's per-socket capture counters.
type sockCollector struct{ e *engine }

var (
	descKPkts       = prometheus.NewDesc("tapline_capture_kernel_packets_total", "Frames the kernel passed the filter and queued or dropped, per AF_PACKET socket (PACKET_STATISTICS).", []string{"socket"}, nil)
	descKDrops      = prometheus.NewDesc("tapline_capture_kernel_drops_total", "Frames the kernel dropped because the socket's queue (--ring-bytes) was full, per socket.", []string{"socket"}, nil)
	descCut         = prometheus.NewDesc("tapline_capture_cut_total", "Frames longer than --snaplen (kept cut, original length recorded), per socket.", []string{"socket"}, nil)
	descStopDropped = prometheus.NewDesc("tapline_capture_stop_dropped_total", "Frames still queued on a socket when the stop read (--stop-read) ended, dropped, per socket.", []string{"socket"}, nil)
	descStopRefused = prometheus.NewDesc("tapline_capture_stop_refused_total", "Frames the kernel dropped on a socket once capture began to stop (not in tapline_capture_kernel_drops_total), per socket.", []string{"socket"}, nil)
)

func (c *sockCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descKPkts
	ch <- descKDrops
	ch <- descCut
	ch <- descStopDropped
	ch <- descStopRefused
}

func (c *sockCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.e.cap.Stats() {
		l := strconv.Itoa(s.Socket)
		ch <- prometheus.MustNewConstMetric(descKPkts, prometheus.CounterValue, float64(s.KernelPackets), l)
		ch <- prometheus.MustNewConstMetric(descKDrops, prometheus.CounterValue, float64(s.KernelDrops), l)
		ch <- prometheus.MustNewConstMetric(descCut, prometheus.CounterValue, float64(s.Cut), l)
		ch <- prometheus.MustNewConstMetric(descStopDropped, prometheus.CounterValue, float64(s.StopDropped), l)
		ch <- prometheus.MustNewConstMetric(descStopRefused, prometheus.CounterValue, float64(s.StopRefused), l)
	}
}
