package proto

import (
	"fmt"
	"strconv"
)

// Stream names. Each stream captures all subjects below its prefix.
const (
	// FramesStream holds batches of decapsulated frames published by decap.
	FramesStream = "TAPLINE_FRAMES"
	// MsgsStream holds reassembled messages and connection events published
	// by reassemble.
	MsgsStream = "TAPLINE_MSGS"
	// ResultsStream holds per-message delivery results published by replay.
	ResultsStream = "TAPLINE_RESULTS"
	// EventsStream holds stage-level reports (kernel drops, publish drops,
	// loss summaries) that are not tied to one shard.
	EventsStream = "TAPLINE_EVENTS"
	// KeysStream holds TLS session secrets in the NSS key log format,
	// shipped from the production host (decap keys) for reassemble to
	// decrypt TLS connections with. Its contents are secrets.
	KeysStream = "TAPLINE_KEYS"
)

// Subject prefixes of the streams.
const (
	FramesPrefix  = "tapline.frames"
	MsgsPrefix    = "tapline.msgs"
	ResultsPrefix = "tapline.results"
	EventsPrefix  = "tapline.events"
	KeysPrefix    = "tapline.keys"
)

// DefaultShards is the number of shards decap spreads flows over when not
// configured otherwise. All stages of one deployment must agree on it.
const DefaultShards = 16

// FramesSubject is the subject a frame batch for vni and shard is published
// on: tapline.frames.<vni>.<shard>.
func FramesSubject(vni uint32, shard int) string {
	return FramesPrefix + "." + strconv.FormatUint(uint64(vni), 10) + "." + strconv.Itoa(shard)
}

// FramesShardFilter is the subject filter matching every VNI of one shard:
// tapline.frames.*.<shard>.
func FramesShardFilter(shard int) string {
	return FramesPrefix + ".*." + strconv.Itoa(shard)
}

// MsgsSubject is the subject the messages and connection events of the
// connections in vni and shard are published on: tapline.msgs.<vni>.<shard>.
// All events of one connection are on one subject, in order.
func MsgsSubject(vni uint32, shard int) string {
	return MsgsPrefix + "." + strconv.FormatUint(uint64(vni), 10) + "." + strconv.Itoa(shard)
}

// ResultsSubject is the subject replay publishes the delivery results of the
// connections in vni and shard on: tapline.results.<vni>.<shard>.
func ResultsSubject(vni uint32, shard int) string {
	return ResultsPrefix + "." + strconv.FormatUint(uint64(vni), 10) + "." + strconv.Itoa(shard)
}

// EventsSubject is the subject a stage publishes its own reports on:
// tapline.events.<stage>.<kind>, e.g. tapline.events.decap.drops.
func EventsSubject(stage, kind string) string {
	return fmt.Sprintf("%s.%s.%s", EventsPrefix, stage, kind)
}

// KeysSubject is the subject key log lines from one source (a production
// host or process, a single token such as its host name) are published on:
// tapline.keys.<source>. Dots and wildcards in source are replaced by '_'.
func KeysSubject(source string) string {
	b := []byte(source)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c == ' ' || c == '\t' {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		b = []byte("_")
	}
	return KeysPrefix + "." + string(b)
}

// ParseSubject splits a frames, msgs or results subject into its VNI and
// shard. It returns an error for any other shape.
func ParseSubject(subject string) (vni uint32, shard int, err error) {
	var prefix, rest string
	for _, p := range []string{FramesPrefix, MsgsPrefix, ResultsPrefix} {
		if len(subject) > len(p)+1 && subject[:len(p)] == p && subject[len(p)] == '.' {
			prefix, rest = p, subject[len(p)+1:]
			break
		}
	}
	if prefix == "" {
		return 0, 0, fmt.Errorf("proto: subject %q is not a tapline frames, msgs or results subject", subject)
	}
	dot := -1
	for i := 0; i < len(rest); i++ {
		if rest[i] == '.' {
			dot = i
			break
		}
	}
	if dot < 0 {
		return 0, 0, fmt.Errorf("proto: subject %q has no shard token", subject)
	}
	v, err := strconv.ParseUint(rest[:dot], 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("proto: subject %q: bad VNI: %w", subject, err)
	}
	s, err := strconv.Atoi(rest[dot+1:])
	if err != nil || s < 0 {
		return 0, 0, fmt.Errorf("proto: subject %q: bad shard", subject)
	}
	return uint32(v), s, nil
}
