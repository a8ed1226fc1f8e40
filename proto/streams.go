package proto

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamLimits bounds one stream. Zero values mean the defaults of
// DefaultLimits for that stream.
type StreamLimits struct {
	MaxAge   time.Duration
	MaxBytes int64
}

// StreamOptions configures how stages provision the streams.
type StreamOptions struct {
	Replicas int          // 1 for a single server; 3 in a production cluster
	Frames   StreamLimits // TAPLINE_FRAMES
	Msgs     StreamLimits // TAPLINE_MSGS
	Results  StreamLimits // TAPLINE_RESULTS
	Events   StreamLimits // TAPLINE_EVENTS
	Keys     StreamLimits // TAPLINE_KEYS
	// Memory stores the streams in memory instead of files (tests only).
	Memory bool
	// Update changes an existing stream whose configuration differs from
	// these options (--update-streams). Without it an existing stream is
	// kept as it is and the differences are reported (ProvisionStreams):
	// a user or another stage may have configured it.
	Update bool
}

// DefaultLimits are the limits used where StreamOptions leaves one zero.
var DefaultLimits = map[string]StreamLimits{
	FramesStream:  {MaxAge: 24 * time.Hour, MaxBytes: 8 << 30},
	MsgsStream:    {MaxAge: 24 * time.Hour, MaxBytes: 8 << 30},
	ResultsStream: {MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30},
	EventsStream:  {MaxAge: 7 * 24 * time.Hour, MaxBytes: 256 << 20},
	KeysStream:    {MaxAge: 24 * time.Hour, MaxBytes: 256 << 20},
}

// StreamConfig returns the JetStream configuration of the named stream with
// the options applied. It is exported so operators can see exactly what the
// stages create.
func (o StreamOptions) StreamConfig(name string) (jetstream.StreamConfig, error) {
	var subject string
	var lim StreamLimits
	switch name {
	case FramesStream:
		subject, lim = FramesPrefix+".>", o.Frames
	case MsgsStream:
		subject, lim = MsgsPrefix+".>", o.Msgs
	case ResultsStream:
		subject, lim = ResultsPrefix+".>", o.Results
	case EventsStream:
		subject, lim = EventsPrefix+".>", o.Events
	case KeysStream:
		subject, lim = KeysPrefix+".>", o.Keys
	default:
		return jetstream.StreamConfig{}, fmt.Errorf("proto: unknown stream %q", name)
	}
	def := DefaultLimits[name]
	if lim.MaxAge == 0 {
		lim.MaxAge = def.MaxAge
	}
	if lim.MaxBytes == 0 {
		lim.MaxBytes = def.MaxBytes
	}
	replicas := o.Replicas
	if replicas <= 0 {
		replicas = 1
	}
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:        name,
		Description: "Tapline " + subject + " (wire contract v" + Version + ")",
		Subjects:    []string{subject},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      lim.MaxAge,
		MaxBytes:    lim.MaxBytes,
		MaxMsgSize:  MaxChunkAccepted + 64<<10, // a full chunk (of any publisher) plus headers
		Replicas:    replicas,
		Storage:     storage,
		Duplicates:  2 * time.Minute,
	}, nil
}

// EnsureStreams provisions the named streams (ProvisionStreams) and
// discards what it found: existing streams with other settings are kept
// and not reported. Stages use ProvisionStreams (through
// stage.ProvisionStreams) to warn about them.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions, names ...string) error {
	_, err := ProvisionStreams(ctx, js, o, names...)
	return err
}
