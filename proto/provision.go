package proto

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamStatus is what provisioning found or did for one stream.
type StreamStatus struct {
	Name string
	// Created: the stream did not exist (JetStream answered "stream not
	// found") and was created with the options.
	Created bool
	// Updated: the stream existed with other settings and was changed to
	// the options (StreamOptions.Update); Diffs says what changed.
	Updated bool
	// Diffs are the settings in which the existing stream differs from the
	// options, e.g. "max_bytes: stream 4.0GiB, options 8.0GiB". Without
	// Update they are kept as the stream has them.
	Diffs []string
	// Replicas and Leader are the stream's replica count and the server
	// leading it ("" on a single server without clustering).
	Replicas int
	Leader   string
}

// ProvisionStreams makes sure every named stream exists and reports what
// it found. One pass, no retries: the caller retries with a timeout that
// suits the cluster (ProvisionTimeout).
//
// The rules: a stream is created only when JetStream answers that it does
// not exist (jetstream.ErrStreamNotFound); a request that goes unanswered
// (a timeout, no responders, a leader election) is an error, never a
// missing stream. An existing stream whose settings differ from o is kept
// as it is and the differences are returned in StreamStatus.Diffs, unless
// o.Update is set: then it is updated to o.
func ProvisionStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions, names ...string) ([]StreamStatus, error) {
	var out []StreamStatus
	for _, name := range names {
		st, err := provisionStream(ctx, js, o, name)
		if err != nil {
			return out, fmt.Errorf("proto: provision stream %s: %w", name, err)
		}
		out = append(out, st)
	}
	return out, nil
}

func provisionStream(ctx context.Context, js jetstream.JetStream, o StreamOptions, name string) (StreamStatus, error) {
	want, err := o.StreamConfig(name)
	if err != nil {
		return StreamStatus{}, err
	}
	st := StreamStatus{Name: name}
	// A create that loses a race with another stage's create looks again
	// at what that stage made; right after such a race the cluster may
	// still answer "not found" for a moment, so it looks a few times.
	for round := 0; round < 20; round++ {
		if round > 0 {
			select {
			case <-ctx.Done():
				return st, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		// A lookup JetStream does not answer at once (no meta or stream
		// leader yet) is never answered: ask again rather than wait.
		lctx, cancel := context.WithTimeout(ctx, LookupTimeout)
		s, err := js.Stream(lctx, name)
		cancel()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue // created meanwhile, with other settings
			}
			if err != nil {
				return st, err
			}
			st.Created = true
			st.fill(s.CachedInfo())
			return st, nil
		}
		if err != nil {
			return st, err
		}
		info := s.CachedInfo()
		st.Diffs = StreamDiffs(info.Config, want)
		if len(st.Diffs) > 0 && o.Update {
			if s, err = js.UpdateStream(ctx, want); err != nil {
				return st, fmt.Errorf("update (--update-streams): %w", err)
			}
			st.Updated = true
			info = s.CachedInfo()
		}
		st.fill(info)
		return st, nil
	}
	return st, errors.New("created by someone else meanwhile and then not found")
}

func (st *StreamStatus) fill(info *jetstream.StreamInfo) {
	if info == nil {
		return
	}
	st.Replicas = info.Config.Replicas
	if info.Cluster != nil {
		st.Leader = info.Cluster.Leader
	}
}

// StreamDiffs lists the settings that matter to Tapline in which have (an
// existing stream) differs from want (what the options ask for).
func StreamDiffs(have, want jetstream.StreamConfig) []string {
	var d []string
	add := func(what string, h, w any) {
		d = append(d, fmt.Sprintf("%s: stream %v, options %v", what, h, w))
	}
	for _, s := range want.Subjects {
		if !slices.Contains(have.Subjects, s) {
			add("subjects", have.Subjects, want.Subjects)
			break
		}
	}
	if have.MaxAge != want.MaxAge {
		add("max_age", have.MaxAge, want.MaxAge)
	}
	if have.MaxBytes != want.MaxBytes {
		add("max_bytes", Size(have.MaxBytes), Size(want.MaxBytes))
	}
	if have.MaxMsgSize != want.MaxMsgSize {
		add("max_msg_size", Size(int64(have.MaxMsgSize)), Size(int64(want.MaxMsgSize)))
	}
	if max(have.Replicas, 1) != max(want.Replicas, 1) {
		add("replicas", max(have.Replicas, 1), max(want.Replicas, 1))
	}
	if have.Storage != want.Storage {
		add("storage", have.Storage, want.Storage)
	}
	if have.Retention != want.Retention {
		add("retention", have.Retention, want.Retention)
	}
	if have.Discard != want.Discard {
		add("discard", have.Discard, want.Discard)
	}
	if have.Duplicates != want.Duplicates {
		add("duplicate_window", have.Duplicates, want.Duplicates)
	}
	return d
}

// Size formats a byte count for messages: 8.0GiB, 256.0MiB, 1000B.
type Size int64

func (s Size) String() string {
	switch {
	case s < 0:
		return fmt.Sprintf("%d", int64(s))
	case s >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(s)/(1<<30))
	case s >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(s)/(1<<20))
	case s >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(s)/(1<<10))
	}
	return fmt.Sprintf("%dB", int64(s))
}

// ProvisionTimeout is the first per-attempt timeout of provisioning
// streams with the given replica count: an R1 stream on one server is
// created in milliseconds, while an R3 stream needs the meta leader to
// place it and its own leader election on three nodes, seconds on a busy
// cluster. Callers double it after each attempt that timed out, up to
// MaxProvisionTimeout, so provisioning follows the cluster's real latency.
func ProvisionTimeout(replicas int) time.Duration {
	return 5 * time.Second * time.Duration(max(replicas, 1))
}

// LookupTimeout bounds one stream lookup of provisioning: JetStream
// answers a lookup at once or, during a leader election, never.
const LookupTimeout = 5 * time.Second

// MaxProvisionTimeout bounds the per-attempt timeout of provisioning.
const MaxProvisionTimeout = 2 * time.Minute

// Unanswered reports whether err means JetStream did not answer (a
// timeout, no responders: a leader election, a node or route down) rather
// than answered with an error. Such an error says nothing about whether a
// stream exists.
func Unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}
