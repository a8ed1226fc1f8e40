package query

import (
	"bufio"
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tapline/tapline/archive/seekable"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// Progress reports how far a query is: frames fetched of the total, and
// bytes fetched.
type Progress func(done, total int, bytes int64)

// Result summarises a query.
type Result struct {
	Chunks     int   // chunks that could match
	Frames     int   // seekable frames fetched
	Packets    int64 // packets written
	Duplicates int64 // packets dropped because another chunk holds their batch
	Bytes      int64 // compressed bytes fetched for frames
	// LinkTypes of the packets written; more than one means libpcap
	// (tcpdump) cannot read the output (tshark and Wireshark can).
	LinkTypes []flow.LinkType
	// Errors are the chunks or frames that could not be read; the rest of
	// the result is still written.
	Errors []error
}

// unit is one seekable frame to fetch.
type unit struct {
	chunk int
	frame int
}

type fetched struct {
	data []byte
	err  error
}

// Write fetches the frames of chunks that overlap f, and writes the
// matching packets as one pcapng section (nanosecond timestamps, one
// interface per encapsulation/VNI/outer source/link type, named as in the
// wire contract) to w, in capture-time order. Batches held by more than one
// chunk (a crash between storing and acknowledging) are written once.
func Write(ctx context.Context, st store.Store, chunks []Chunk, f Filter, w io.Writer, progress Progress) (Result, error) {
	return WriteFormat(ctx, st, chunks, f, w, FormatPcapng, progress)
}

// Output formats of WriteFormat.
const (
	// FormatPcapng is one pcapng section: nanosecond timestamps and one
	// interface per encapsulation/VNI/outer source/link type.
	FormatPcapng = "pcapng"
	// FormatPcap is classic pcap with nanosecond timestamps (magic
	// 0xa1b23c4d): for tools that read only pcap. It holds one link type,
	// loses the per-packet VNI, and fails on results that mix link types.
	FormatPcap = "pcap"
)

// ErrMixedLinkTypes is returned by WriteFormat in FormatPcap when the
// result mixes link types (e.g. Ethernet and raw IP).
var ErrMixedLinkTypes = errors.New("the result mixes link types (Ethernet and raw IP), which classic pcap cannot hold: use pcapng or narrow with --vni")

// WriteFormat is Write with a choice of output format (FormatPcapng or
// FormatPcap).
func WriteFormat(ctx context.Context, st store.Store, chunks []Chunk, f Filter, w io.Writer, format string, progress Progress) (Result, error) {
	return writeFormat(ctx, st, chunks, f, w, format, progress, nil)
}

// writeFormat is WriteFormat calling seen, when not nil, with every packet
// written.
func writeFormat(ctx context.Context, st store.Store, chunks []Chunk, f Filter, w io.Writer, format string, progress Progress, seen func(*pkt)) (Result, error) {
	var res Result
	res.Chunks = len(chunks)
	owner := owners(chunks)
	var units []unit
	for ci, c := range chunks {
		for fi, fr := range c.Index.Frames {
			if fr.Packets > 0 && f.overlaps(fr.FirstNs, fr.LastNs) {
				units = append(units, unit{ci, fi})
			}
		}
	}
	first := func(u unit) int64 { return chunks[u.chunk].Index.Frames[u.frame].FirstNs }
	slices.SortStableFunc(units, func(a, b unit) int { return cmp.Compare(first(a), first(b)) })

	var out sink
	switch format {
	case FormatPcapng, "":
		out = newOutput(w)
	case FormatPcap:
		out = &pcapOutput{bw: bufio.NewWriterSize(w, 1<<20)}
	default:
		return res, fmt.Errorf("unknown output format %q (pcapng or pcap)", format)
	}
	if seen != nil {
		out = seenSink{out, seen}
	}
	// Fetch ahead with a few concurrent range GETs, consume in order.
	const ahead = 4
	results := make([]chan fetched, len(units))
	for i := range results {
		results[i] = make(chan fetched, 1)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, ahead)
	go func() {
		for i, u := range units {
			select {
			case sem <- struct{}{}:
			case <-fctx.Done():
				return
			}
			go func() {
				c := chunks[u.chunk]
				fr := c.Index.Frames[u.frame]
				b, err := st.GetRange(fctx, c.Index.Chunk, fr.Offset, fr.Size)
				results[i] <- fetched{b, err}
			}()
		}
	}()
	dec, err := seekable.NewDecoder()
	if err != nil {
		return res, err
	}
	defer dec.Close()
	cum := make([][]uint64, len(chunks))
	var h pktHeap
	var ord uint64
	for i, u := range units {
		// Everything earlier than this frame's first packet is final.
		for h.Len() > 0 && h[0].t < first(u) {
			if err := out.write(heap.Pop(&h).(*pkt)); err != nil {
				return res, err
			}
		}
		var r fetched
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		<-sem
		c := chunks[u.chunk]
		fr := c.Index.Frames[u.frame]
		res.Frames++
		res.Bytes += int64(len(r.data))
		if progress != nil {
			progress(i+1, len(units), res.Bytes)
		}
		where := func() string {
			return fmt.Sprintf("chunk %s frame %d (%d packets, %s to %s)", c.Index.Chunk, u.frame, fr.Packets,
				time.Unix(0, fr.FirstNs).UTC().Format(time.RFC3339Nano), time.Unix(0, fr.LastNs).UTC().Format(time.RFC3339Nano))
		}
		if r.err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("%s is unreadable: %w", where(), r.err))
			continue
		}
		sec, err := dec.DecodeFrame(nil, r.data, seekable.Entry{CompressedSize: uint32(fr.Size), DecompressedSize: uint32(fr.USize), Checksum: fr.XXH}, true)
		if err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("%s is corrupt: %w", where(), err))
			continue
		}
		if cum[u.chunk] == nil {
			cum[u.chunk] = cumulative(c.Index.Msgs)
		}
		rd := framebatch.NewReader(sec)
		var batch []*pkt
		p := fr.FirstPacket
		var derr error
		for ; ; p++ {
			var fm framebatch.Frame
			if err := rd.Next(&fm); err != nil {
				if !errors.Is(err, io.EOF) {
					derr = err
				}
				break
			}
			if owner != nil {
				seq := seqOf(c.Index.Msgs, cum[u.chunk], p)
				if o, ok := owner[ownKey{c.Index.VNI, hourOf(c.Index.FirstNs), seq}]; ok && o != u.chunk {
					res.Duplicates++
					continue
				}
			}
			if !f.inTime(fm.TimeNs) || !f.matchPacket(fm.Link, fm.Data) {
				continue
			}
			ord++
			batch = append(batch, &pkt{t: fm.TimeNs, ord: ord, iface: fm.Iface(), orig: fm.OrigLen, data: fm.Data})
		}
		if derr == nil && p-fr.FirstPacket != fr.Packets {
			derr = fmt.Errorf("frame holds %d packets, index says %d", p-fr.FirstPacket, fr.Packets)
		}
		if derr != nil {
			res.Errors = append(res.Errors, fmt.Errorf("%s is corrupt: %w", where(), derr))
			continue
		}
		for _, b := range batch {
			heap.Push(&h, b)
		}
	}
	for h.Len() > 0 {
		if err := out.write(heap.Pop(&h).(*pkt)); err != nil {
			return res, err
		}
	}
	res.Packets, res.LinkTypes = out.stats()
	return res, out.close()
}

// ownKey names one part of a batch: the archive splits a batch whose
// packets span two hours into one part per hour partition.
type ownKey struct {
	vni  uint32
	hour int64
	seq  uint64
}

func hourOf(ns int64) int64 {
	const h = int64(time.Hour)
	if ns%h < 0 {
		return ns/h - 1
	}
	return ns / h
}

// owners decides which chunk's copy of a batch is written when chunks of
// one VNI hold the same batch (a redelivery after a crash between storing a
// chunk and acknowledging it): the chunk listed first (lowest sequences). It
// returns nil when no two chunks overlap, the usual case.
func owners(chunks []Chunk) map[ownKey]int {
	type span struct {
		vni         uint32
		hour        int64
		first, last uint64
	}
	spans := make([]span, len(chunks))
	for i, c := range chunks {
		spans[i] = span{c.Index.VNI, hourOf(c.Index.FirstNs), c.Index.FirstSeq, c.Index.LastSeq}
	}
	slices.SortFunc(spans, func(a, b span) int {
		return cmp.Or(cmp.Compare(a.vni, b.vni), cmp.Compare(a.hour, b.hour), cmp.Compare(a.first, b.first))
	})
	overlap := false
	for i := 1; i < len(spans) && !overlap; i++ {
		a, b := spans[i-1], spans[i]
		// Sorted by first: any overlap in a partition shows between
		// neighbours once the running maximum of last is carried along.
		if a.vni == b.vni && a.hour == b.hour {
			if b.first <= a.last {
				overlap = true
			}
			spans[i].last = max(a.last, b.last)
		}
	}
	if !overlap {
		return nil
	}
	own := map[ownKey]int{}
	for ci, c := range chunks {
		for _, m := range c.Index.Msgs {
			k := ownKey{c.Index.VNI, hourOf(c.Index.FirstNs), m[0]}
			if _, ok := own[k]; !ok {
				own[k] = ci
			}
		}
	}
	return own
}

// cumulative returns the running packet count after each message.
func cumulative(msgs [][2]uint64) []uint64 {
	out := make([]uint64, len(msgs))
	var n uint64
	for i, m := range msgs {
		n += m[1]
		out[i] = n
	}
	return out
}

// seqOf returns the stream sequence of the message holding packet p.
func seqOf(msgs [][2]uint64, cum []uint64, p int64) uint64 {
	i := sort.Search(len(cum), func(i int) bool { return cum[i] > uint64(p) })
	if i >= len(msgs) {
		return 0
	}
	return msgs[i][0]
}

type pkt struct {
	t     int64
	ord   uint64
	iface framebatch.Iface
	orig  int
	data  []byte
}

type pktHeap []*pkt

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	return h[i].t < h[j].t || (h[i].t == h[j].t && h[i].ord < h[j].ord)
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(*pkt)) }
func (h *pktHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// sink is an output format.
type sink interface {
	write(p *pkt) error
	close() error
	stats() (int64, []flow.LinkType)
}

// pcapOutput writes classic pcap with nanosecond timestamps.
type pcapOutput struct {
	bw      *bufio.Writer
	w       *pcapgo.Writer
	link    flow.LinkType
	packets int64
}

func (o *pcapOutput) write(p *pkt) error {
	if o.w == nil {
		o.w = pcapgo.NewWriterNanos(o.bw)
		o.link = p.iface.Link
		if err := o.w.WriteFileHeader(framebatch.SnapLen, layers.LinkType(o.link)); err != nil {
			return err
		}
	}
	if p.iface.Link != o.link {
		return ErrMixedLinkTypes
	}
	o.packets++
	return o.w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(0, p.t), CaptureLength: len(p.data), Length: max(p.orig, len(p.data))}, p.data)
}

func (o *pcapOutput) close() error {
	if o.w == nil {
		o.w = pcapgo.NewWriterNanos(o.bw)
		if err := o.w.WriteFileHeader(framebatch.SnapLen, layers.LinkTypeEthernet); err != nil {
			return err
		}
	}
	return o.bw.Flush()
}

func (o *pcapOutput) stats() (int64, []flow.LinkType) {
	if o.packets == 0 {
		return 0, nil
	}
	return o.packets, []flow.LinkType{o.link}
}

// output writes one pcapng section with gopacket's pcapng writer
// (nanosecond resolution, section length unknown so it streams).
type output struct {
	w       io.Writer
	ng      *pcapgo.NgWriter
	ifaces  map[framebatch.Iface]int
	links   []flow.LinkType
	packets int64
}

func (o *output) stats() (int64, []flow.LinkType) { return o.packets, o.links }

func newOutput(w io.Writer) *output { return &output{w: w, ifaces: map[framebatch.Iface]int{}} }

var ngOptions = pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "tapline archive query"}}

func ngIface(i framebatch.Iface) pcapgo.NgInterface {
	return pcapgo.NgInterface{Name: i.Name(), LinkType: layers.LinkType(i.Link), SnapLength: framebatch.SnapLen, TimestampResolution: 9}
}

func (o *output) write(p *pkt) error {
	id, ok := o.ifaces[p.iface]
	if !ok {
		var err error
		if o.ng == nil {
			o.ng, err = pcapgo.NewNgWriterInterface(o.w, ngIface(p.iface), ngOptions)
			id = 0
		} else {
			id, err = o.ng.AddInterface(ngIface(p.iface))
		}
		if err != nil {
			return err
		}
		o.ifaces[p.iface] = id
		if !slices.Contains(o.links, p.iface.Link) {
			o.links = append(o.links, p.iface.Link)
		}
	}
	o.packets++
	return o.ng.WritePacket(gopacket.CaptureInfo{
		Timestamp: time.Unix(0, p.t), CaptureLength: len(p.data), Length: max(p.orig, len(p.data)), InterfaceIndex: id,
	}, p.data)
}

// close finishes the output; with no packet it writes a valid empty
// capture (one Ethernet interface) so readers do not fail.
func (o *output) close() error {
	if o.ng == nil {
		var err error
		o.ng, err = pcapgo.NewNgWriterInterface(o.w, ngIface(framebatch.Iface{Link: flow.LinkEthernet}), ngOptions)
		if err != nil {
			return err
		}
	}
	return o.ng.Flush()
}

// seenSink shows every packet written to a function (WriteWithSecrets).
type seenSink struct {
	sink
	seen func(*pkt)
}

func (s seenSink) write(p *pkt) error {
	s.seen(p)
	return s.sink.write(p)
}
