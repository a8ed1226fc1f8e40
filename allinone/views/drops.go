package views

import (
	"cmp"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tapline/tapline/proto"
)

// Drops gathers the stages' own drop reports from TAPLINE_EVENTS
// (tapline.events.<stage>.drops: decap's kernel drops, publish drops,
// malformed and filtered datagrams; archive's VNI overflow; any other
// stage's report of that kind). A report holds totals since its process
// started, per instance (the report's "instance"; reports without one are
// one unnamed instance): a stage's figures are the sum over its
// instances. A counter of an instance that goes down means it restarted,
// and the totals of the finished run are kept. So for an instance whose
// whole run lies in the window the figures are exact; for one that
// started before the window they include what it dropped before.
type Drops struct {
	stages map[string]*stageDrops
}

type stageDrops struct {
	runs    map[string]*instanceDrops // by instance id
	reports int
	last    time.Time
}

type instanceDrops struct {
	done map[string]float64 // totals of finished runs
	cur  map[string]float64 // the current run's last report
}

// StageDrops is one stage's counters (flattened: "kernel_drops",
// "drops.publish_failed.batches", "malformed.vxlan_short" …), summed over
// its instances.
type StageDrops struct {
	Stage    string             `json:"stage"`
	Counters map[string]float64 `json:"counters"`
	Reports  int                `json:"reports"`
	Last     time.Time          `json:"last_report"`
	// Instances are the instance ids that reported, sorted ("" for
	// reports that name none).
	Instances []string `json:"instances,omitempty"`
}

// NewDrops returns an empty Drops.
func NewDrops() *Drops { return &Drops{stages: map[string]*stageDrops{}} }

// notCounters are the fields of drop reports that are not counts.
var notCounters = map[string]bool{"at_ns": true, "tracked_vnis": true, "max_vnis": true, "last_vni": true}

// Add takes one entry of TAPLINE_EVENTS. It reports whether the entry was
// a drop report; an undecodable one is an error.
func (d *Drops) Add(subject string, body []byte, at time.Time) (bool, error) {
	rest, ok := strings.CutPrefix(subject, proto.EventsPrefix+".")
	if !ok {
		return false, nil
	}
	stage, kind, ok := strings.Cut(rest, ".")
	if !ok || kind != "drops" {
		return false, nil
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return true, fmt.Errorf("%s: %w", subject, err)
	}
	instance, _ := v["instance"].(string)
	flat := map[string]float64{}
	flatten("", v, flat)
	s := d.stages[stage]
	if s == nil {
		s = &stageDrops{runs: map[string]*instanceDrops{}}
		d.stages[stage] = s
	}
	r := s.runs[instance]
	if r == nil {
		r = &instanceDrops{done: map[string]float64{}, cur: map[string]float64{}}
		s.runs[instance] = r
	}
	restarted := false
	for k, n := range r.cur {
		if flat[k] < n {
			restarted = true
			break
		}
	}
	if restarted {
		for k, n := range r.cur {
			r.done[k] += n
		}
	}
	r.cur = flat
	s.reports++
	if at.After(s.last) {
		s.last = at
	}
	return true, nil
}

func flatten(prefix string, v map[string]any, out map[string]float64) {
	for k, x := range v {
		name := k
		if prefix != "" {
			name = prefix + "." + k
		}
		switch x := x.(type) {
		case float64:
			if !notCounters[name] {
				out[name] = x
			}
		case map[string]any:
			flatten(name, x, out)
		}
	}
}

// Stages returns every stage's counters, by stage name.
func (d *Drops) Stages() []StageDrops {
	var out []StageDrops
	for name, s := range d.stages {
		c := map[string]float64{}
		var ids []string
		for id, r := range s.runs {
			ids = append(ids, id)
			for k, n := range r.done {
				c[k] += n
			}
			for k, n := range r.cur {
				c[k] += n
			}
		}
		sort.Strings(ids)
		out = append(out, StageDrops{Stage: name, Counters: c, Reports: s.reports, Last: s.last, Instances: ids})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stage < out[j].Stage })
	return out
}

// InstancesText is "1 instance" or "2 instances", with the ids ("" shown
// as "unnamed").
func (s StageDrops) InstancesText() string {
	names := make([]string, len(s.Instances))
	for i, id := range s.Instances {
		names[i] = cmp.Or(id, "unnamed")
	}
	word := "instances"
	if len(names) == 1 {
		word = "instance"
	}
	return fmt.Sprintf("%d %s: %s", len(names), word, strings.Join(names, ", "))
}

// Line is the counters of one stage on one line, non-zero ones only,
// sorted by name.
func (s StageDrops) Line() string {
	var keys []string
	for k, n := range s.Counters {
		if n != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return "nothing dropped"
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.0f", k, s.Counters[k])
	}
	return strings.Join(parts, ", ")
}
