package keys

import "github.com/prometheus/client_golang/prometheus"

// metrics are the counters of `decap keys` (tapline_keys_*). Lines are
// counted, never logged.
type metrics struct {
	read        prometheus.Counter
	published   prometheus.Counter
	bad         prometheus.Counter
	messages    prometheus.Counter
	duplicates  prometheus.Counter
	pubErrors   prometheus.Counter
	rotations   prometheus.Counter
	truncations prometheus.Counter
	buffered    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	c := func(name, help string) prometheus.Counter {
		x := prometheus.NewCounter(prometheus.CounterOpts{Name: "tapline_keys_" + name, Help: help})
		reg.MustRegister(x)
		return x
	}
	m := &metrics{
		read:        c("lines_read_total", "Key log lines read (every line ended by a newline, and a last line at the end of a file)."),
		published:   c("lines_published_total", "Key lines stored in TAPLINE_KEYS (acknowledged by JetStream)."),
		bad:         c("lines_bad_total", "Malformed key log lines, skipped."),
		messages:    c("messages_published_total", "Messages (batches of key lines) stored in TAPLINE_KEYS."),
		duplicates:  c("messages_duplicate_total", "Messages JetStream reported as already stored (a retried publish)."),
		pubErrors:   c("publish_errors_total", "Publish attempts that failed and were retried."),
		rotations:   c("rotations_total", "Times the followed file was replaced by a new file (rename rotation)."),
		truncations: c("truncations_total", "Times a followed file was truncated (copytruncate) and read again from its start."),
	}
	m.buffered = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tapline_keys_buffered_bytes", Help: "Bytes of key lines read and not yet stored."})
	reg.MustRegister(m.buffered)
	return m
}
