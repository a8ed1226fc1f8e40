package archive

import "github.com/prometheus/client_golang/prometheus"

// metrics are the archive's Prometheus metrics, registered on Deps.Metrics.
type metrics struct {
	frames, frameBytes, batches, chunks   prometheus.Counter
	storedBytes, uncompressedBytes        prometheus.Counter
	uploadErrors, uploadRetries           prometheus.Counter
	rejected, redelivered                 prometheus.Counter
	vniOverflowBatches, vniOverflowFrames prometheus.Counter
	backlog, pendingBytes, pendingBatches prometheus.Gauge
	ratio                                 prometheus.Gauge
	uploadSeconds                         prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "tapline_archive_" + name, Help: help})
	}
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "tapline_archive_" + name, Help: help})
	}
	m := &metrics{
		frames:             c("frames_total", "Frames (packets) archived: stored and acknowledged."),
		frameBytes:         c("frame_bytes_total", "Captured bytes of the frames archived."),
		batches:            c("batches_total", "Frame batches (stream messages) archived."),
		chunks:             c("chunks_total", "Chunks (with their index) stored."),
		storedBytes:        c("stored_bytes_total", "Compressed bytes of the chunks stored."),
		uncompressedBytes:  c("uncompressed_bytes_total", "Uncompressed pcapng bytes of the chunks stored."),
		uploadErrors:       c("upload_errors_total", "Failed attempts to store a chunk or its index."),
		uploadRetries:      c("upload_retries_total", "Retries of storing a chunk after an error."),
		rejected:           c("rejected_batches_total", "Batches that were not valid pcapng, stored raw under rejected/."),
		redelivered:        c("redelivered_batches_total", "Batches delivered again by JetStream (after a crash or an expired ack wait)."),
		vniOverflowBatches: c("vni_overflow_batches_total", "Batches of VNIs beyond --max-vnis, acknowledged without being archived."),
		vniOverflowFrames:  c("vni_overflow_frames_total", "Frames in the batches of VNIs beyond --max-vnis (not archived)."),
		backlog:            g("backlog_messages", "Batches on the consumer not yet acknowledged (pending + in flight)."),
		pendingBytes:       g("pending_bytes", "Bytes of batches received and not yet acknowledged."),
		pendingBatches:     g("pending_batches", "Batches received and not yet acknowledged."),
		ratio:              g("compression_ratio", "Uncompressed / compressed bytes of all chunks stored by this process."),
		uploadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tapline_archive_upload_seconds",
			Help: "Time to store one chunk and its index, retries included.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
	}
	r.MustRegister(m.frames, m.frameBytes, m.batches, m.chunks, m.storedBytes, m.uncompressedBytes, m.uploadErrors,
		m.uploadRetries, m.rejected, m.redelivered, m.vniOverflowBatches, m.vniOverflowFrames, m.backlog, m.pendingBytes, m.pendingBatches, m.ratio, m.uploadSeconds)
	return m
}
