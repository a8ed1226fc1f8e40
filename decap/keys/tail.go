package keys

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// keyFile is one open key log file (or stdin) being read: where reading
// stands, the partial line after the last "\n", and the batch being built.
type keyFile struct {
	f        *os.File
	name     string // for logs: the path, or "stdin"
	ident    string // file identity in message ids
	regular  bool   // a regular file: truncation can be detected
	readOff  int64  // bytes read from f
	pending  []byte // bytes of the line not yet ended by "\n"
	overlong bool   // the current line is longer than MaxLineLen: skipped to its "\n"
	lineNo   int64  // lines ended so far
	last     []byte // the tail of the last ended line, "\n" included
	lastEnd  int64  // offset just after that line
	grewAt   time.Time

	b      []byte // the batch being built
	bStart int64
	bEnd   int64
	bLines int
}

// openKeyFile opens path for reading from its start.
func openKeyFile(path string) (*keyFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	kf, err := newKeyFile(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return kf, nil
}

func newKeyFile(f *os.File, name string) (*keyFile, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	kf := &keyFile{f: f, name: name, regular: fi.Mode().IsRegular(), grewAt: time.Now()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && kf.regular {
		kf.ident = fmt.Sprintf("%x.%x", uint64(st.Dev), uint64(st.Ino))
	} else {
		kf.ident = fmt.Sprintf("stream.%d.%d", os.Getpid(), time.Now().UnixNano())
	}
	return kf, nil
}

// same reports whether fi is the file kf has open.
func (kf *keyFile) same(fi os.FileInfo) bool {
	mine, err := kf.f.Stat()
	return err == nil && os.SameFile(mine, fi)
}

// reader turns key files into batches on out, checking every line.
type reader struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	out chan<- *batch
	buf []byte
	// queued counts the key lines sent on out.
	queued *atomic.Int64
	// waiting holds why the followed file cannot be read (nil: it can).
	waiting *atomic.Pointer[error]
}

func newReader(cfg Config, log *slog.Logger, m *metrics, out chan<- *batch) *reader {
	return &reader{cfg: cfg, log: log, m: m, out: out, buf: make([]byte, 32<<10)}
}

// truncated reports whether kf's file was truncated under it (copytruncate)
// since it was last read: it is shorter than what was read, or the bytes
// before the read position are no longer the last line read.
func (r *reader) truncated(kf *keyFile) (bool, error) {
	fi, err := kf.f.Stat()
	if err != nil {
		return false, err
	}
	if fi.Size() < kf.readOff {
		return true, nil
	}
	if fi.Size() == kf.readOff || len(kf.last) == 0 {
		return false, nil
	}
	got := make([]byte, len(kf.last))
	if _, err := kf.f.ReadAt(got, kf.lastEnd-int64(len(got))); err != nil {
		return true, nil
	}
	return !bytes.Equal(got, kf.last), nil
}

// restart reads kf again from its start after a truncation. The batch built
// so far (lines of the old content) is sent first; a partial line is lost
// with the truncation and counted bad.
func (r *reader) restart(ctx context.Context, kf *keyFile) error {
	if err := r.emit(ctx, kf); err != nil {
		return err
	}
	if len(kf.pending) > 0 || kf.overlong {
		r.bad(kf, kf.lineNo+1)
	}
	if _, err := kf.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r.m.truncations.Inc()
	r.log.Info("key log truncated, reading it from its start", "file", kf.name, "lines_before", kf.lineNo)
	kf.readOff, kf.lineNo, kf.lastEnd = 0, 0, 0
	kf.pending, kf.last, kf.overlong = kf.pending[:0], nil, false
	return nil
}

// pass reads what kf has now, up to its end, and sends the batches. It
// reports whether anything was read. A partial last line is kept for the
// next pass.
func (r *reader) pass(ctx context.Context, kf *keyFile) (bool, error) {
	if kf.regular {
		t, err := r.truncated(kf)
		if err != nil {
			return false, err
		}
		if t {
			if err := r.restart(ctx, kf); err != nil {
				return false, err
			}
		}
	}
	grew := false
	for ctx.Err() == nil {
		n, err := kf.f.Read(r.buf)
		if n > 0 {
			grew = true
			if err := r.consume(ctx, kf, r.buf[:n]); err != nil {
				return grew, err
			}
		}
		if err == io.EOF || (err == nil && n == 0) {
			break
		}
		if err != nil {
			return grew, fmt.Errorf("read %s: %w", kf.name, err)
		}
	}
	if grew {
		kf.grewAt = time.Now()
	}
	return grew, r.emit(ctx, kf)
}

// finish ends kf: a partial last line is taken as a whole line (the writer
// is done with the file), and the last batch is sent.
func (r *reader) finish(ctx context.Context, kf *keyFile) error {
	if kf.overlong {
		r.line(ctx, kf, nil, kf.readOff, true)
	} else if len(kf.pending) > 0 {
		p := kf.pending
		kf.pending = nil
		if err := r.line(ctx, kf, p, kf.readOff, false); err != nil {
			return err
		}
	}
	return r.emit(ctx, kf)
}

// consume splits data (the next bytes of kf) into lines.
func (r *reader) consume(ctx context.Context, kf *keyFile, data []byte) error {
	pos := kf.readOff
	kf.readOff += int64(len(data))
	for len(data) > 0 {
		if len(kf.pending) == 0 && !kf.overlong {
			// A writer that does not append leaves zeros before its next
			// line after a truncation; they belong to no line.
			z := len(data) - len(bytes.TrimLeft(data, "\x00"))
			data, pos = data[z:], pos+int64(z)
			if len(data) == 0 {
				return nil
			}
		}
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !kf.overlong && len(kf.pending)+len(data) > MaxLineLen+1 {
				kf.overlong, kf.pending = true, kf.pending[:0]
			}
			if !kf.overlong {
				kf.pending = append(kf.pending, data...)
			}
			return nil
		}
		end := pos + int64(i) + 1
		var line []byte
		if !kf.overlong {
			if len(kf.pending) > 0 {
				line = append(kf.pending, data[:i]...)
			} else {
				line = data[:i]
			}
			if len(line) > MaxLineLen+1 {
				kf.overlong = true
			}
		}
		// Remember the tail of this line for truncation checks.
		tail := data[:i+1]
		if len(tail) > 64 {
			tail = tail[len(tail)-64:]
		}
		kf.last = append(kf.last[:0], tail...)
		kf.lastEnd = end
		if err := r.line(ctx, kf, line, end, kf.overlong); err != nil {
			return err
		}
		kf.pending, kf.overlong = kf.pending[:0], false
		pos = end
		data = data[i+1:]
	}
	return nil
}

// line takes one ended line of kf, ending at offset end (its "\n"
// excluded from line).
func (r *reader) line(ctx context.Context, kf *keyFile, line []byte, end int64, overlong bool) error {
	kf.lineNo++
	r.m.read.Inc()
	if overlong {
		r.bad(kf, kf.lineNo)
		return nil
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	switch CheckLine(line) {
	case LineSkip:
		return nil
	case LineBad:
		r.bad(kf, kf.lineNo)
		return nil
	}
	if kf.bLines == 0 {
		kf.bStart = end - int64(len(line)) - 1
	}
	kf.b = append(kf.b, line...)
	kf.b = append(kf.b, '\n')
	kf.bLines++
	kf.bEnd = end
	if len(kf.b) >= r.cfg.BatchBytes {
		return r.emit(ctx, kf)
	}
	return nil
}

func (r *reader) bad(kf *keyFile, lineNo int64) {
	r.m.bad.Inc()
	// The line is a secret, or garbage next to secrets: only where it is.
	r.log.Warn("malformed key log line skipped", "file", kf.name, "line", lineNo)
}

// emit sends kf's batch, waiting while the buffer is full.
func (r *reader) emit(ctx context.Context, kf *keyFile) error {
	if kf.bLines == 0 {
		return nil
	}
	b := &batch{id: msgID(r.cfg.Source, kf.ident, kf.bStart, kf.bEnd, kf.b), data: kf.b, lines: kf.bLines}
	select {
	case r.out <- b:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.m.buffered.Add(float64(len(b.data)))
	if r.queued != nil {
		r.queued.Add(int64(b.lines))
	}
	kf.b, kf.bLines = make([]byte, 0, r.cfg.BatchBytes+MaxLineLen+1), 0
	return nil
}
