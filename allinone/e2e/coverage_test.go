package e2e

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// span is a half-open range of stream offsets.
type span struct{ lo, hi int64 }

// archivedSpans reads the whole archive and returns, per connection
// direction "src-dst" (ip:port-ip:port), the stream offsets (relative to
// the SYN's sequence number + 1) its archived TCP segments cover. For
// diagnosing the loss report: a reported gap the archive covers was not
// lost by the mirror.
func (p *Pipeline) archivedSpans() (map[string][]span, error) {
	out := filepath.Join(p.Dir, "coverage.pcapng")
	if err := exec.Command(filepath.Join(binDir, "archive"), "query", "--store", p.Store,
		"--from", "0", "--to", "now", "--out", out).Run(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	type seg struct{ seq, n uint32 }
	isn := map[string]uint32{}
	segs := map[string][]seg{}
	r := framebatch.NewReader(b)
	var f framebatch.Frame
	for {
		err := r.Next(&f)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		k, err := flow.Parse(f.Link, f.Data)
		if err != nil || k.Proto != 6 || k.L4Offset == 0 || k.L4Offset+20 > len(f.Data) {
			continue
		}
		tcp := f.Data[k.L4Offset:]
		hl := int(tcp[12]>>4) * 4
		end := k.L3Offset + k.IPTotalLen
		if end > len(f.Data) {
			end = len(f.Data)
		}
		payload := end - k.L4Offset - hl
		dir := netip.AddrPortFrom(k.Src, k.SrcPort).String() + "-" + netip.AddrPortFrom(k.Dst, k.DstPort).String()
		seq := binary.BigEndian.Uint32(tcp[4:8])
		if tcp[13]&0x02 != 0 { // SYN
			isn[dir] = seq
			continue
		}
		if payload > 0 {
			segs[dir] = append(segs[dir], seg{seq, uint32(payload)})
		}
	}
	res := map[string][]span{}
	for dir, ss := range segs {
		base, ok := isn[dir]
		if !ok {
			continue
		}
		var sp []span
		for _, s := range ss {
			lo := int64(s.seq - base - 1)
			sp = append(sp, span{lo, lo + int64(s.n)})
		}
		sort.Slice(sp, func(i, j int) bool { return sp[i].lo < sp[j].lo })
		var merged []span
		for _, s := range sp {
			if n := len(merged); n > 0 && s.lo <= merged[n-1].hi {
				merged[n-1].hi = max(merged[n-1].hi, s.hi)
				continue
			}
			merged = append(merged, s)
		}
		res[dir] = merged
	}
	return res, nil
}

// covered is how many bytes of [lo, hi) the spans hold.
func covered(sp []span, lo, hi int64) int64 {
	var n int64
	for _, s := range sp {
		a, b := max(s.lo, lo), min(s.hi, hi)
		if b > a {
			n += b - a
		}
	}
	return n
}
