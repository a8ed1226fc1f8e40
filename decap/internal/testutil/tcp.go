// Package testutil holds helpers shared by decap's tests: TCP stream
// reassembly of published frames, to compare with tshark's figures.
package testutil

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"

	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// Streams reassembles TCP payload per direction from frames, by sequence
// number (later duplicates ignored), enough for clean captures.
type Streams struct {
	dirs map[string]*dir
}

type dir struct {
	segs map[uint32][]byte
}

// NewStreams returns an empty reassembler.
func NewStreams() *Streams { return &Streams{dirs: map[string]*dir{}} }

// Add feeds one frame.
func (s *Streams) Add(f *framebatch.Frame) {
	k, err := flow.Parse(f.Link, f.Data)
	if err != nil || k.Proto != flow.ProtoTCP || k.L4Offset == 0 || k.Fragment {
		return
	}
	end := k.L3Offset + k.IPTotalLen
	if end > len(f.Data) {
		end = len(f.Data)
	}
	tcp := f.Data[k.L4Offset:end]
	if len(tcp) < 20 {
		return
	}
	hl := int(tcp[12]>>4) * 4
	if hl > len(tcp) {
		return
	}
	payload := tcp[hl:]
	name := fmt.Sprintf("%s -> %s", netipPort(k.Src.String(), k.SrcPort), netipPort(k.Dst.String(), k.DstPort))
	d := s.dirs[name]
	if d == nil {
		d = &dir{segs: map[uint32][]byte{}}
		s.dirs[name] = d
	}
	if len(payload) == 0 {
		return
	}
	seq := binary.BigEndian.Uint32(tcp[4:8])
	if _, ok := d.segs[seq]; !ok {
		d.segs[seq] = append([]byte(nil), payload...)
	}
}

func netipPort(a string, p uint16) string {
	if len(a) > 0 && a[0] != '[' && containsColon(a) {
		a = "[" + a + "]"
	}
	return fmt.Sprintf("%s:%d", a, p)
}

func containsColon(s string) bool {
	for i := range s {
		if s[i] == ':' {
			return true
		}
	}
	return false
}

// Bytes returns the reassembled payload of direction "src:port -> dst:port".
func (s *Streams) Bytes(name string) []byte {
	d := s.dirs[name]
	if d == nil {
		return nil
	}
	seqs := make([]uint32, 0, len(d.segs))
	for q := range d.segs {
		seqs = append(seqs, q)
	}
	sort.Slice(seqs, func(i, j int) bool { return int32(seqs[i]-seqs[0]) < int32(seqs[j]-seqs[0]) })
	var out []byte
	var next uint32
	for i, q := range seqs {
		p := d.segs[q]
		if i == 0 {
			next = q
		}
		if skip := int32(next - q); skip > 0 {
			if int(skip) >= len(p) {
				continue
			}
			p = p[skip:]
		}
		out = append(out, p...)
		next = q + uint32(len(d.segs[q]))
	}
	return out
}

// Names lists the directions seen.
func (s *Streams) Names() []string {
	var n []string
	for k := range s.dirs {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// SHA1Prefix is the first 12 hex digits of the SHA-1 of b, as in
// testdata/captures/expected/*.tcpstreams.txt.
func SHA1Prefix(b []byte) string {
	h := sha1.Sum(b)
	return hex.EncodeToString(h[:])[:12]
}
