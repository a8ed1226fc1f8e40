package replay

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are replay's Prometheus metrics, registered on Deps.Metrics.
type metrics struct {
	messages    *prometheus.CounterVec // by result
	bytes       *prometheus.CounterVec // by result
	mismatches  prometheus.Counter
	incomplete  *prometheus.CounterVec // by action
	errors      *prometheus.CounterVec // by kind
	lag         prometheus.Histogram
	latency     prometheus.Histogram
	conns       prometheus.Gauge
	connsTotal  *prometheus.CounterVec // by outcome
	held        prometheus.GaugeFunc
	subscribers prometheus.Gauge
	undeliver   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, held func() float64) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tapline_replay_messages_total", Help: "Messages by result: sent, skipped, failed, match, mismatch.",
		}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tapline_replay_payload_bytes_total", Help: "Payload bytes of messages by result.",
		}, []string{"result"}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tapline_replay_mismatches_total", Help: "Test system responses that differ from production's.",
		}),
		incomplete: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tapline_replay_incomplete_total", Help: "Incomplete messages by action taken: skipped, sent, marked, aborted.",
		}, []string{"action"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tapline_replay_errors_total", Help: "Errors by kind: dial, write, parse, results, fetch, giveup.",
		}, []string{"kind"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tapline_replay_lag_seconds", Help: "Time from the capture of a message's last packet to its delivery to the test system.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tapline_replay_delivery_latency_seconds", Help: "Time from a message's arrival in JetStream to its delivery (pacing waits included).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 14),
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tapline_replay_connections", Help: "Original connections being replayed now.",
		}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tapline_replay_connections_total", Help: "Replayed connections by outcome: done, failed, filtered, idle.",
		}, []string{"outcome"}),
		held: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tapline_replay_unacked_messages", Help: "JetStream messages received and not yet acknowledged.",
		}, held),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tapline_replay_listen_subscribers", Help: "Test system connections accepted in listen mode.",
		}),
		undeliver: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tapline_replay_undeliverable_messages_total", Help: "Messages acknowledged without sending because the test system can never take them (wrong kind for the target).",
		}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.bytes, m.mismatches, m.incomplete, m.errors, m.lag, m.latency, m.conns, m.connsTotal, m.held, m.subscribers, m.undeliver} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
