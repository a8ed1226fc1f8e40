package archive

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
)

// DefaultMaxVNIs is the default of --max-vnis: above decap's default (64),
// so with decap as the producer the cap only matters when several decaps
// or another producer publish many VNIs.
const DefaultMaxVNIs = 256

// vniReportEvery is how often at most an overflow is logged and reported.
const vniReportEvery = 10 * time.Second

// VNIOverflowEvent is the JSON body published on
// tapline.events.archive.drops when batches of VNIs beyond --max-vnis were
// not archived: totals since start.
type VNIOverflowEvent struct {
	Stage   string `json:"stage"`
	AtNs    int64  `json:"at_ns"`
	Batches uint64 `json:"vni_overflow_batches"`
	Frames  uint64 `json:"vni_overflow_frames"`
	MaxVNIs int    `json:"max_vnis"`
	LastVNI uint32 `json:"last_vni"`
}

// vniCap admits the first max distinct VNIs and counts the rest. Used by
// the consume loop only (not concurrently).
type vniCap struct {
	max             int
	vnis            map[uint32]struct{}
	batches, frames uint64
	reported        uint64 // batches at the last report
	lastVNI         uint32
	next            time.Time
}

func newVNICap(max int) *vniCap {
	if max == 0 {
		max = DefaultMaxVNIs
	}
	return &vniCap{max: max, vnis: map[uint32]struct{}{}}
}

// admit reports whether batches of vni are archived.
func (v *vniCap) admit(vni uint32) bool {
	if _, ok := v.vnis[vni]; ok {
		return true
	}
	if len(v.vnis) >= v.max {
		return false
	}
	v.vnis[vni] = struct{}{}
	return true
}

// overflow counts a batch of frames frames of vni that is not archived,
// and reports (log and event) at most every vniReportEvery.
func (a *archiver) overflow(vni uint32, frames int) {
	v := a.vnis
	v.batches++
	v.frames += uint64(frames)
	v.lastVNI = vni
	a.m.vniOverflowBatches.Inc()
	a.m.vniOverflowFrames.Add(float64(frames))
	if now := time.Now(); now.After(v.next) {
		v.next = now.Add(vniReportEvery)
		a.reportOverflow()
	}
}

// reportOverflow logs and publishes the overflow totals if they grew.
func (a *archiver) reportOverflow() {
	v := a.vnis
	if v.batches == v.reported {
		return
	}
	v.reported = v.batches
	a.log.Warn("batches of VNIs beyond --max-vnis are not archived (counted in tapline_archive_vni_overflow_batches_total)",
		"max_vnis", v.max, "batches", v.batches, "frames", v.frames, "last_vni", v.lastVNI,
		"fix", "raise --max-vnis if these VNIs are mirror sessions")
	if a.nc == nil {
		return
	}
	body, _ := json.Marshal(VNIOverflowEvent{Stage: "archive", AtNs: time.Now().UnixNano(), Batches: v.batches, Frames: v.frames, MaxVNIs: v.max, LastVNI: v.lastVNI})
	m := nats.NewMsg(proto.EventsSubject("archive", "drops"))
	m.Header.Set(proto.HdrVersion, proto.Version)
	m.Data = body
	if err := a.nc.PublishMsg(m); err != nil {
		a.log.Warn("publishing VNI overflow report failed", "err", err)
	}
}
