package pmd

import (
	"bytes"
	"io"

	"github.com/klauspost/compress/flate"
)

// Prober tells whether a byte string is a complete permessage-deflate
// message that inflates without any history. Resynchronisation uses it as
// evidence that a candidate frame is real. Not safe for concurrent use.
type Prober struct {
	fr  io.ReadCloser
	in  bytes.Reader
	buf []byte
	out []byte
}

// Inflates reports whether msg (a compressed message payload without its
// 0x00 0x00 0xff 0xff tail) inflates cleanly with an empty window,
// producing at most limit bytes before it ends.
func (p *Prober) Inflates(msg []byte, limit int) bool {
	p.buf = append(append(p.buf[:0], msg...), tail...)
	p.in.Reset(p.buf)
	if p.fr == nil {
		p.fr = flate.NewReader(&p.in)
		p.out = make([]byte, 4096)
	} else {
		_ = p.fr.(flate.Resetter).Reset(&p.in, nil)
	}
	total := 0
	for total <= limit {
		n, err := p.fr.Read(p.out)
		total += n
		if err == io.EOF {
			return p.in.Len() == 0
		}
		if err != nil {
			return false
		}
	}
	return false
}

// InflatesPrefix reports whether prefix, the first bytes of a compressed
// message, inflates without error and without history as far as it goes
// (running out of input is fine; a corrupt block or a reference before
// the start is not).
func (p *Prober) InflatesPrefix(prefix []byte) bool {
	p.in.Reset(prefix)
	if p.fr == nil {
		p.fr = flate.NewReader(&p.in)
		p.out = make([]byte, 4096)
	} else {
		_ = p.fr.(flate.Resetter).Reset(&p.in, nil)
	}
	for {
		_, err := p.fr.Read(p.out)
		switch err {
		case nil:
			continue
		case io.EOF:
			return p.in.Len() == 0
		case io.ErrUnexpectedEOF:
			return true
		}
		return false
	}
}
