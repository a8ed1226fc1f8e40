package spool

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/tapline/tapline/proto"
)

// UploadConfig shapes Upload.
type UploadConfig struct {
	// Rate caps the upload in bytes per second of record data (0: no cap).
	Rate int64
	// Window is the records published before waiting for their
	// acknowledgements (0: 16).
	Window int
	// AckTimeout is how long one acknowledgement is awaited (0: 10 s).
	AckTimeout time.Duration
	// Retry is the pause after a failed window (0: 500 ms).
	Retry time.Duration
	// OnFailure, when set, is called after failed windows in a row (for
	// example to provision the streams again).
	OnFailure func(failures int, err error)
}

// UploadStats are the uploader's counters.
type UploadStats struct {
	Records, Bytes atomic.Uint64 // acknowledged
	Retries        atomic.Uint64 // windows sent again after a failure
	LastDelayNs    atomic.Int64  // append-to-acknowledgement time of the last record
	MaxDelayNs     atomic.Int64  // its maximum
}

// Upload publishes the spool's records in order to JetStream, each with
// Nats-Msg-Id "<spool id>-<sequence>" (so a record sent again after a
// failure or a restart is stored once), at most cfg.Rate bytes per second,
// and commits each acknowledged record. A window whose publishing fails
// (NATS down, no stream, timeout) is sent again from its first
// unacknowledged record after cfg.Retry. It returns when ctx ends.
func (s *Spool) Upload(ctx context.Context, js jetstream.JetStream, cfg UploadConfig, st *UploadStats, log *slog.Logger) error {
	if cfg.Window <= 0 {
		cfg.Window = 16
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 500 * time.Millisecond
	}
	var lim *rate.Limiter
	if cfg.Rate > 0 {
		// The bucket holds a tenth of a second, and at least the largest
		// record, so any record can pass.
		lim = rate.NewLimiter(rate.Limit(cfg.Rate), int(max(cfg.Rate/10, MaxRecord+1<<17)))
		lim.AllowN(time.Now(), lim.Burst()) // start empty: no burst at start
	}
	window := make([]Record, 0, cfg.Window)
	futs := make([]jetstream.PubAckFuture, 0, cfg.Window)
	failures := 0
	for {
		// While NATS is away, wait rather than filling the client's
		// reconnect buffer with windows that are sent again anyway.
		for js.Conn().Status() != nats.CONNECTED {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(cfg.Retry):
			}
		}
		window = window[:0]
		r, err := s.Next(ctx)
		if err != nil {
			return err
		}
		window = append(window, r)
		for len(window) < cfg.Window {
			r, ok, err := s.TryNext()
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			window = append(window, r)
		}
		s.NoteHead(window[0].AppendNs)
		futs = futs[:0]
		var sendErr error
		for i := range window {
			r := &window[i]
			if lim != nil {
				if err := lim.WaitN(ctx, len(r.Data)); err != nil {
					return err
				}
			}
			m := &nats.Msg{Subject: r.Subject, Data: r.Data, Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, proto.SeqMsgID(s.id, r.Seq))
			m.Header.Set(proto.HdrVersion, proto.Version)
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				sendErr = err
				break
			}
			futs = append(futs, f)
		}
		// Commit the acknowledged prefix; the first failure ends it.
		done := 0
		timer := time.NewTimer(cfg.AckTimeout)
	acks:
		for i, f := range futs {
			select {
			case <-f.Ok():
				if err := s.Commit(window[i]); err != nil {
					timer.Stop()
					return err
				}
				d := time.Now().UnixNano() - window[i].AppendNs
				st.LastDelayNs.Store(d)
				if d > st.MaxDelayNs.Load() {
					st.MaxDelayNs.Store(d)
				}
				st.Records.Add(1)
				st.Bytes.Add(uint64(len(window[i].Data)))
				done++
				if done < len(window) {
					s.NoteHead(window[done].AppendNs)
				}
			case err := <-f.Err():
				sendErr = err
				break acks
			case <-timer.C:
				sendErr = errors.New("no acknowledgement within " + cfg.AckTimeout.String())
				break acks
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			}
		}
		timer.Stop()
		if done == len(window) {
			failures = 0
			continue
		}
		if sendErr == nil {
			sendErr = errors.New("publish incomplete")
		}
		failures++
		st.Retries.Add(1)
		if failures == 1 || failures%20 == 0 {
			log.Warn("upload failed, the spool keeps the records and sends them again", "seq", window[done].Seq, "failures", failures, "err", sendErr)
		}
		if cfg.OnFailure != nil {
			cfg.OnFailure(failures, sendErr)
		}
		if err := s.Rewind(window[done].Seq); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cfg.Retry):
		}
	}
}
