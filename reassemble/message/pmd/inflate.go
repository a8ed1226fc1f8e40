package pmd

import (
	"bytes"
	"errors"
	"io"

	"github.com/klauspost/compress/flate"
)

// tail completes a permessage-deflate message: the 0x00 0x00 0xff 0xff the
// sender stripped (RFC 7692 7.2.2) and a final empty stored block so the
// inflater ends with io.EOF instead of waiting for more.
var tail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// lowWater is how much compressed input is kept buffered ahead of the
// inflater while a message is still arriving. One Read of the flate
// decoder produces at most 32 KiB and consumes at most ~62 KiB for any
// real encoder, so with this margin it never runs dry mid-message.
const lowWater = 128 << 10

// ErrUndecodable is returned when a message cannot be inflated exactly
// (corrupt data, or a back-reference into history this Inflater does not
// have: the window was lost to a gap or the handshake was not seen).
var ErrUndecodable = errors.New("pmd: message cannot be inflated")

// source is the flate input: a byte slice the caller appends to, read
// through a bytes.Reader (the flate decoder has a fast path for it). The
// reader reports io.EOF when it runs dry, which the decoder turns into an
// error: Write keeps lowWater bytes ahead so that only happens on bad data.
type source struct {
	buf []byte
	rd  bytes.Reader
}

// consumed is how many bytes of buf the decoder has read.
func (s *source) consumed() int { return len(s.buf) - s.rd.Len() }

func (s *source) avail() int { return s.rd.Len() }

// add appends p, first dropping what was consumed if that is most of it.
func (s *source) add(p []byte) {
	c := s.consumed()
	if c > 0 && c >= len(s.buf)/2 {
		n := copy(s.buf, s.buf[c:])
		s.buf = s.buf[:n]
		c = 0
	}
	s.buf = append(s.buf, p...)
	s.rd.Reset(s.buf)
	s.rd.Seek(int64(c), io.SeekStart)
}

func (s *source) reset() {
	s.buf = s.buf[:0]
	s.rd.Reset(s.buf)
}

// Inflater inflates the messages of one direction, streaming: output is
// handed to the emit function as it is produced, so memory does not depend
// on the message size. It keeps the last window of output (when context
// takeover is on or unknown) as the dictionary of the next message, and
// that window is always an exact, contiguous suffix of the sender's
// history: after a lost or failed message it is emptied, so a later
// message either inflates exactly or fails with ErrUndecodable — never
// garbage.
type Inflater struct {
	mode    Takeover
	wsize   int
	fr      io.ReadCloser
	src     source
	window  []byte
	out     []byte
	active  bool
	failed  bool
	aborted bool  // Abort was called (possibly by emit, inside pump)
	in      int64 // compressed bytes given to the current message
	ended   bool  // End added the tail
}

// NewInflater returns an Inflater for a compressor with the given takeover
// mode and window bits (8..15; the window kept is 2^bits bytes, at least
// 512 as zlib uses for 8).
func NewInflater(mode Takeover, windowBits int) *Inflater {
	if windowBits < 9 {
		windowBits = 9
	}
	if windowBits > 15 {
		windowBits = 15
	}
	return &Inflater{mode: mode, wsize: 1 << windowBits}
}

// Begin starts a message.
func (f *Inflater) Begin() {
	f.active = true
	f.failed = false
	f.aborted = false
	f.in, f.ended = 0, false
	f.src.reset()
	var dict []byte
	if f.mode != TakeoverOff {
		dict = f.window
		if len(dict) > f.wsize {
			dict = dict[len(dict)-f.wsize:]
		}
	}
	if f.fr == nil {
		f.fr = flate.NewReader(&f.src.rd)
	}
	_ = f.fr.(flate.Resetter).Reset(&f.src.rd, dict)
	if f.out == nil {
		f.out = make([]byte, 32<<10)
	}
}

// In is how many compressed bytes the current message was given.
func (f *Inflater) In() int64 { return f.in }

// Consumed is how many of those the decoder has read so far: what the
// output emitted up to now was inflated from.
func (f *Inflater) Consumed() int64 {
	total := f.in
	if f.ended {
		total += int64(len(tail))
	}
	return max(0, min(total-int64(f.src.avail()), f.in))
}

// Failed reports whether the current message failed to inflate.
func (f *Inflater) Failed() bool { return f.failed }

// Write adds compressed bytes of the current message and emits what can be
// inflated so far. After a failure it returns ErrUndecodable and ignores
// further input of the message.
func (f *Inflater) Write(p []byte, emit func([]byte)) error {
	if f.failed || !f.active {
		return ErrUndecodable
	}
	f.in += int64(len(p))
	f.src.add(p)
	if f.src.avail() < 2*lowWater {
		return nil
	}
	return f.pump(false, emit)
}

// End finishes the current message: it inflates the rest and returns
// ErrUndecodable if the message was not a valid deflate stream.
func (f *Inflater) End(emit func([]byte)) error {
	if !f.active {
		return ErrUndecodable
	}
	f.active = false
	if f.failed {
		return ErrUndecodable
	}
	f.src.add(tail)
	f.ended = true
	err := f.pump(true, emit)
	if cap(f.src.buf) > 4*lowWater {
		f.src.buf = nil
		f.src.rd.Reset(nil)
	}
	return err
}

// Abort drops the current message (lost bytes, or a limit reached): the
// window is no longer an exact history, so it is emptied. Called by the
// emit function of Write or End, it stops the inflating at once.
func (f *Inflater) Abort() {
	f.active = false
	f.aborted = true
	f.fail()
}

func (f *Inflater) fail() {
	f.failed = true
	f.window = f.window[:0]
	f.src.reset()
}

func (f *Inflater) pump(final bool, emit func([]byte)) error {
	for final || f.src.avail() >= lowWater {
		n, err := f.fr.Read(f.out)
		if n > 0 {
			emit(f.out[:n])
			if f.aborted {
				return nil
			}
			f.remember(f.out[:n])
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			f.fail()
			return ErrUndecodable
		}
	}
	return nil
}

func (f *Inflater) remember(p []byte) {
	if f.mode == TakeoverOff {
		return
	}
	if len(p) >= f.wsize {
		f.window = append(f.window[:0], p[len(p)-f.wsize:]...)
		return
	}
	if len(f.window)+len(p) > 2*f.wsize {
		keep := f.wsize - len(p)
		n := copy(f.window, f.window[len(f.window)-keep:])
		f.window = f.window[:n]
	}
	f.window = append(f.window, p...)
}
