package keys

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// run reads cfg.Path (or stdin) into batches until it is done (without
// --follow: at its end) or ctx ends.
func (r *reader) run(ctx context.Context) error {
	if r.cfg.Path == "-" {
		in := r.cfg.Stdin
		if in == nil {
			in = os.Stdin
		}
		return r.stream(ctx, in, &keyFile{name: "stdin", ident: fmt.Sprintf("stream.%d.%d", os.Getpid(), time.Now().UnixNano())})
	}
	if r.cfg.Follow {
		return r.follow(ctx)
	}
	kf, err := openKeyFile(r.cfg.Path)
	if err != nil {
		return fmt.Errorf("open key log: %w", err)
	}
	defer kf.f.Close()
	if !kf.regular {
		return r.stream(ctx, kf.f, kf)
	}
	if _, err := r.pass(ctx, kf); err != nil {
		return err
	}
	return r.finish(ctx, kf)
}

// stream reads a pipe (stdin, a FIFO) to its end. Lines are sent at least
// every --poll while the writer is idle, so a pipe fed slowly is not held
// back until a batch fills.
func (r *reader) stream(ctx context.Context, in io.Reader, kf *keyFile) error {
	chunks := make(chan []byte)
	errc := make(chan error, 1)
	go func() {
		for {
			buf := make([]byte, 32<<10)
			n, err := in.Read(buf)
			if n > 0 {
				select {
				case chunks <- buf[:n]:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	tick := time.NewTicker(r.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case c := <-chunks:
			if err := r.consume(ctx, kf, c); err != nil {
				return err
			}
		case err := <-errc:
			if err != io.EOF {
				return fmt.Errorf("read %s: %w", kf.name, err)
			}
			return r.finish(ctx, kf)
		case <-tick.C:
			if err := r.emit(ctx, kf); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// follow tails cfg.Path until ctx ends. When the path names a new file
// (rename rotation), the old one is still read until it has not grown for
// --rotate-wait, since the writing process keeps its open file until it
// reopens its key log; the new one is read from its start. A truncated file
// (copytruncate) is read again from its start.
func (r *reader) follow(ctx context.Context) error {
	var cur *keyFile
	var draining []*keyFile
	defer func() {
		for _, kf := range append(draining, cur) {
			if kf != nil {
				kf.f.Close()
			}
		}
	}()
	waiting := false
	tick := time.NewTicker(r.cfg.Poll)
	defer tick.Stop()
	for {
		fi, err := os.Stat(r.cfg.Path)
		switch {
		case err == nil && (cur == nil || !cur.same(fi)):
			if nf, err := openKeyFile(r.cfg.Path); err == nil {
				if cur != nil {
					draining = append(draining, cur)
					r.m.rotations.Inc()
					r.log.Info("key log replaced by a new file; reading the old one until it is idle", "file", r.cfg.Path, "rotate_wait", r.cfg.RotateWait)
				} else if waiting {
					r.log.Info("key log file appeared", "file", r.cfg.Path)
				}
				cur, waiting = nf, false
				r.setWaiting(nil)
			}
		case err != nil && cur == nil:
			if !waiting {
				r.log.Warn("waiting for the key log file", "file", r.cfg.Path, "err", err)
				waiting = true
			}
			r.setWaiting(err)
		}
		keep := draining[:0]
		for _, kf := range draining {
			if _, err := r.pass(ctx, kf); err != nil {
				return err
			}
			if time.Since(kf.grewAt) < r.cfg.RotateWait {
				keep = append(keep, kf)
				continue
			}
			if err := r.finish(ctx, kf); err != nil {
				return err
			}
			kf.f.Close()
			r.log.Info("rotated key log idle, closed", "lines", kf.lineNo)
		}
		draining = keep
		if cur != nil {
			if _, err := r.pass(ctx, cur); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (r *reader) setWaiting(err error) {
	if r.waiting == nil {
		return
	}
	if err == nil {
		r.waiting.Store(nil)
		return
	}
	e := fmt.Errorf("waiting for key log %s: %w", r.cfg.Path, err)
	r.waiting.Store(&e)
}
