package archive

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

func metricSum(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	v, err := stage.MetricSum(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestVNIFloodBounded: batches of 300 distinct VNIs create chunks (and
// objects) for the first --max-vnis VNIs only; the rest are acknowledged,
// counted and reported on tapline.events.archive.drops, never silently.
func TestVNIFloodBounded(t *testing.T) {
	const n, max = 300, 16
	_, url := natstest.Run(t)
	dir := t.TempDir()
	cfg := testConfig(url, dir)
	cfg.MaxVNIs = max
	nc, js := connect(t, url)
	sub, err := nc.SubscribeSync("tapline.events.archive.drops")
	if err != nil {
		t.Fatal(err)
	}
	var frames []pub
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	for v := range n {
		frames = append(frames, synth(2, t0, 1000, uint32(1000+v*7919), 1, 1, 64)...)
	}
	publish(t, js, frames, 8)
	stop, _, reg := runArchiveReg(t, cfg)
	waitAcked(t, js, cfg.Consumer)
	stop()

	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	vniDirs := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "vni=") {
			vniDirs++
		}
	}
	if vniDirs != max {
		t.Errorf("%d VNI partitions stored, want %d (--max-vnis)", vniDirs, max)
	}
	if b := metricSum(t, reg, "tapline_archive_vni_overflow_batches_total"); b != n-max {
		t.Errorf("overflow batches %v, want %d", b, n-max)
	}
	if f := metricSum(t, reg, "tapline_archive_vni_overflow_frames_total"); f != 2*(n-max) {
		t.Errorf("overflow frames %v, want %d", f, 2*(n-max))
	}
	var last VNIOverflowEvent
	for {
		m, err := sub.NextMsg(2 * time.Second)
		if err != nil {
			break
		}
		if err := json.Unmarshal(m.Data, &last); err != nil {
			t.Fatal(err)
		}
	}
	if last.Batches != n-max || last.Frames != 2*(n-max) || last.MaxVNIs != max {
		t.Errorf("last overflow event %+v, want %d batches, %d frames, max %d", last, n-max, 2*(n-max), max)
	}
}
