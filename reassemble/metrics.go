package reassemble

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the reassembler's Prometheus series, registered on the
// stage's registry (never the global one).
type metrics struct {
	batches        prometheus.Counter
	batchErrors    prometheus.Counter
	frames         prometheus.Counter
	framesIgnored  *prometheus.CounterVec // reason
	connsOpened    prometheus.Counter
	connsClosed    *prometheus.CounterVec // reason
	conns          *prometheus.GaugeVec   // shard
	streamBytes    *prometheus.CounterVec // dir
	retransBytes   *prometheus.CounterVec // dir
	messages       *prometheus.CounterVec // dir, opcode, complete
	messageBytes   *prometheus.CounterVec // dir, opcode
	incomplete     *prometheus.CounterVec // dir
	inflation      prometheus.Histogram   // inflated:compressed ratio of compressed messages
	inflationCut   prometheus.Counter
	gapBytes       *prometheus.CounterVec // vni
	gaps           *prometheus.CounterVec // vni, reason
	decodeFailures *prometheus.CounterVec // kind
	truncated      prometheus.Counter
	causalHeld     prometheus.Counter
	buffered       *prometheus.GaugeVec // shard
	pending        *prometheus.GaugeVec // shard
	ackPending     *prometheus.GaugeVec // shard
	held           *prometheus.GaugeVec // shard
	unreplayable   prometheus.Counter
	resumed        prometheus.Counter
	published      prometheus.Counter
	publishRetries prometheus.Counter
	inflight       *prometheus.GaugeVec // shard
	takeovers      prometheus.Counter

	tlsConns         prometheus.Counter
	tlsUndecryptable prometheus.Counter
	tlsRecords       *prometheus.CounterVec // dir, result
	tlsKeys          *prometheus.CounterVec // result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns = "tapline_reassemble_"
	m := &metrics{
		batches:        prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "batches_total", Help: "Frame batches consumed."}),
		batchErrors:    prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "batch_errors_total", Help: "Frame batches that were not valid pcapng (the frames before the error are used)."}),
		frames:         prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "frames_total", Help: "Frames read from batches."}),
		framesIgnored:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "frames_ignored_total", Help: "Frames not used for reassembly, by reason (not_tcp, fragment, malformed, stray)."}, []string{"reason"}),
		connsOpened:    prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "connections_opened_total", Help: "TCP connections seen."}),
		connsClosed:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "connections_closed_total", Help: "TCP connections ended, by reason (fin, rst, idle, evicted, memory, reused, seq_jump, shutdown)."}, []string{"reason"}),
		conns:          prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "connections", Help: "TCP connections tracked now."}, []string{"shard"}),
		streamBytes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "stream_bytes_total", Help: "Unique TCP payload bytes reassembled, by direction."}, []string{"dir"}),
		retransBytes:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "retransmitted_bytes_total", Help: "TCP payload bytes seen again (retransmissions, duplicates, overlaps), by direction."}, []string{"dir"}),
		messages:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "messages_total", Help: "Messages published, by direction, opcode and completeness."}, []string{"dir", "opcode", "complete"}),
		messageBytes:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "message_bytes_total", Help: "Decoded message bytes published, by direction and opcode."}, []string{"dir", "opcode"}),
		incomplete:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "incomplete_messages_total", Help: "Messages published as incomplete (touched by loss or undecodable), by direction."}, []string{"dir"}),
		gapBytes:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "gap_bytes_total", Help: "TCP stream bytes lost by the mirror (known from sequence numbers), by VNI."}, []string{"vni"}),
		gaps:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "gaps_total", Help: "Holes declared in TCP streams, by VNI and reason."}, []string{"vni", "reason"}),
		decodeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "decode_failures_total", Help: "Decoder failures at connection close, by kind (bad_frame, undecodable, resync)."}, []string{"kind"}),
		truncated:      prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "truncated_packets_total", Help: "TCP packets the mirror truncated (their missing tail is a gap)."}),
		causalHeld:     prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "causal_held_bytes_total", Help: "Stream bytes of one direction held until the other direction delivered the bytes they acknowledge (the mirror reordered the directions)."}),
		buffered:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "buffered_bytes", Help: "Out-of-order bytes held."}, []string{"shard"}),
		pending:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "consumer_pending", Help: "Consumer lag: frame batches in the stream not yet delivered to this shard's consumer."}, []string{"shard"}),
		ackPending:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "consumer_ack_pending", Help: "Frame batches delivered but not yet acknowledged."}, []string{"shard"}),
		held:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "held_batches", Help: "Frame batches held unacknowledged for open connections."}, []string{"shard"}),
		resumed:        prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "resumed_connections_total", Help: "Connections opened as the continuation of one closed idle, evicted or by a sequence jump on the same 5-tuple (decoded as that one was)."}),
		unreplayable:   prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "unreplayable_connections_total", Help: "Connections whose batches were acknowledged before they ended (--max-held-batches): a failover resumes them mid-stream."}),
		published:      prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "published_total", Help: "Entries (chunks and events) stored in the messages stream."}),
		publishRetries: prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "publish_retries_total", Help: "Times the unacknowledged publishes of a shard were sent again after a failure."}),
		inflight:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "publish_inflight", Help: "Publishes awaiting acknowledgement."}, []string{"shard"}),
		takeovers:      prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "shard_takeovers_total", Help: "Times this instance started receiving a shard's frames."}),
	}
	m.inflation = prometheus.NewHistogram(prometheus.HistogramOpts{Name: ns + "inflation_ratio", Help: "Inflated bytes per compressed byte of each complete permessage-deflate message published (decompression amplification; messages cut by --max-inflation-ratio are counted in inflation_limited_messages_total instead).",
		Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}})
	m.inflationCut = prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "inflation_limited_messages_total", Help: "Compressed messages cut and flagged incomplete (reason inflation-limit) because they inflated past --max-inflation-ratio."})
	m.tlsConns = prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "tls_connections_total", Help: "Connections detected as TLS (a ClientHello) and decrypted."})
	m.tlsUndecryptable = prometheus.NewCounter(prometheus.CounterOpts{Name: ns + "tls_undecryptable_connections_total", Help: "TLS connections with records given up because their keys did not arrive in time (or that cannot be decrypted at all); none of those bytes is published."})
	m.tlsRecords = prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "tls_records_total", Help: "TLS records of closed connections, by direction and result (decrypted, lost, undecryptable)."}, []string{"dir", "result"})
	m.tlsKeys = prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "tls_keys_total", Help: "Key log lines read from TAPLINE_KEYS, by result (stored, bad)."}, []string{"result"})
	for _, c := range []prometheus.Collector{m.inflation, m.inflationCut, m.tlsConns, m.tlsUndecryptable, m.tlsRecords, m.tlsKeys,
		m.batches, m.batchErrors, m.frames, m.framesIgnored, m.connsOpened, m.connsClosed, m.conns,
		m.streamBytes, m.retransBytes, m.messages, m.messageBytes, m.incomplete, m.gapBytes, m.gaps, m.decodeFailures, m.truncated, m.causalHeld,
		m.buffered, m.pending, m.ackPending, m.held, m.unreplayable, m.resumed, m.published, m.publishRetries, m.inflight, m.takeovers} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
