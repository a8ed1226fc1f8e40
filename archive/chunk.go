package archive

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tapline/tapline/archive/index"
	"github.com/tapline/tapline/archive/seekable"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// hourNs is the length of a partition: chunks never mix packets of two
// UTC hours.
const hourNs = int64(time.Hour)

// hourOf is the partition (hours since the Unix epoch, floored) of a
// capture time.
func hourOf(ns int64) int64 {
	h := ns / hourNs
	if ns%hourNs < 0 {
		h--
	}
	return h
}

// partKey names an open chunk: one per VNI and hour.
type partKey struct {
	vni  uint32
	hour int64
}

// chunkParams are the builder's limits.
type chunkParams struct {
	frameBytes int   // uncompressed bytes per seekable frame
	chunkBytes int64 // uncompressed bytes per chunk (to size buffers)
	maxFlows   int
	// writers recycles pcapng writers (and their section buffers).
	writers *sync.Pool
	// bufs keeps a few stored chunks' buffers for the next chunks, so the
	// compressed data is not written to freshly faulted-in memory each
	// time (a small bounded free list: sync.Pool is emptied by every GC).
	bufs chan []byte
}

func newParams(frameBytes int, chunkBytes int64, maxFlows int) chunkParams {
	return chunkParams{frameBytes: frameBytes, chunkBytes: chunkBytes, maxFlows: maxFlows,
		writers: &sync.Pool{New: func() any { return &framebatch.Writer{App: "tapline archive"} }},
		bufs:    make(chan []byte, 2)}
}

// buffer returns an empty buffer of capacity at least n.
func (p chunkParams) buffer(n int) []byte {
	select {
	case b := <-p.bufs:
		if cap(b) >= n {
			return b[:0]
		}
	default:
	}
	return make([]byte, 0, n)
}

// release gives back the buffer of a chunk that is stored and no longer
// referenced.
func (p chunkParams) release(b []byte) {
	if cap(b) == 0 {
		return
	}
	select {
	case p.bufs <- b:
	default:
	}
}

// flowID is a flow in canonical (lower endpoint first) form.
type flowID struct {
	a, b   netip.Addr
	ap, bp uint16
	proto  uint8
}

// chunk accumulates the frames of one VNI: each seekable zstd frame is a
// run of complete pcapng sections — batches copied as they arrived, or a
// section written by framebatch.Writer for a batch that could not be
// copied —, compressed as soon as it reaches frameBytes, so a chunk holds
// only compressed data plus one frame in progress.
type chunk struct {
	p   chunkParams
	enc *seekable.Encoder
	w   *framebatch.Writer
	sec []byte // finished sections of the frame in progress (w's section follows them)

	key     partKey
	opened  time.Time // wall time of the first message
	obj     []byte    // the compressed frames so far
	entries []seekable.Entry
	idx     index.Index
	cur     index.Frame // frame in progress
	flows   map[flowID]*index.Flow
	// lastID and lastFlow skip the map for runs of one flow.
	lastID   flowID
	lastFlow *index.Flow
	grp      *group
}

func newChunk(p chunkParams, enc *seekable.Encoder, key partKey, now time.Time) *chunk {
	c := &chunk{p: p, enc: enc, key: key, opened: now, flows: map[flowID]*index.Flow{}, grp: &group{}}
	c.w = p.writers.Get().(*framebatch.Writer)
	c.w.Reset()
	c.idx = index.Index{Version: index.Version, VNI: key.vni, Stream: proto.FramesStream}
	return c
}

// empty reports whether the chunk holds no message.
func (c *chunk) empty() bool { return len(c.idx.Msgs) == 0 }

// usize is the uncompressed size so far.
func (c *chunk) usize() int64 { return c.idx.UncompressedSize + int64(c.pending()) }

// pending is the uncompressed size of the frame in progress.
func (c *chunk) pending() int { return len(c.sec) + c.w.Len() }

// add appends the frames of message seq. raw, when not nil, is the batch's
// pcapng as received, decoding to exactly frames and holding nothing else
// (framebatch.Reader.Verbatim): it is copied as it is when it fits a
// seekable frame, and the frames are parsed only for the index. Otherwise
// (nil, or larger than a frame) the frames are written again.
func (c *chunk) add(seq uint64, frames []framebatch.Frame, raw []byte) {
	copyRaw := raw != nil && len(raw) <= c.p.frameBytes
	if copyRaw && c.pending()+len(raw) > c.p.frameBytes {
		c.cutFrame() // the batch stays whole within one frame
	}
	if c.empty() {
		c.idx.FirstSeq = seq
	}
	if seq < c.idx.FirstSeq {
		c.idx.FirstSeq = seq
	}
	if seq > c.idx.LastSeq {
		c.idx.LastSeq = seq
	}
	for i := range frames {
		f := &frames[i]
		if c.idx.Packets == 0 {
			c.idx.FirstNs, c.idx.LastNs = f.TimeNs, f.TimeNs
		}
		c.idx.FirstNs = min(c.idx.FirstNs, f.TimeNs)
		c.idx.LastNs = max(c.idx.LastNs, f.TimeNs)
		if c.cur.Packets == 0 {
			c.cur.FirstNs, c.cur.LastNs = f.TimeNs, f.TimeNs
		}
		c.cur.FirstNs = min(c.cur.FirstNs, f.TimeNs)
		c.cur.LastNs = max(c.cur.LastNs, f.TimeNs)
		c.cur.Packets++
		c.idx.Packets++
		c.idx.CapturedBytes += int64(len(f.Data))
		c.idx.WireBytes += int64(max(f.OrigLen, len(f.Data)))
		c.flow(f)
		if copyRaw {
			continue
		}
		c.w.Add(f)
		if c.pending() >= c.p.frameBytes {
			c.cutFrame()
		}
	}
	if copyRaw {
		// Behind what the writer holds, so the frame keeps arrival order.
		c.sec = append(append(c.sec, c.w.Bytes()...), raw...)
		c.w.Reset()
		if c.pending() >= c.p.frameBytes {
			c.cutFrame()
		}
	}
	// Messages must be listed in the order of their packets; they are,
	// since add is called in arrival order.
	c.idx.Msgs = append(c.idx.Msgs, [2]uint64{seq, uint64(len(frames))})
}

func (c *chunk) flow(f *framebatch.Frame) {
	k, err := flow.Parse(f.Link, f.Data)
	if err != nil {
		c.idx.NonIPPackets++
		return
	}
	id := flowID{a: k.Src, b: k.Dst, ap: k.SrcPort, bp: k.DstPort, proto: k.Proto}
	if c := id.a.Compare(id.b); c > 0 || (c == 0 && id.ap > id.bp) {
		id.a, id.b, id.ap, id.bp = id.b, id.a, id.bp, id.ap
	}
	fl := c.lastFlow
	if fl == nil || id != c.lastID {
		fl = c.flows[id]
	}
	if fl == nil {
		if len(c.flows) >= c.p.maxFlows {
			c.idx.FlowsTruncated = true
			return
		}
		fl = &index.Flow{Proto: k.Proto, Src: k.Src, SrcPort: k.SrcPort, Dst: k.Dst, DstPort: k.DstPort, FirstNs: f.TimeNs, LastNs: f.TimeNs}
		c.flows[id] = fl
	}
	c.lastID, c.lastFlow = id, fl
	fl.FirstNs = min(fl.FirstNs, f.TimeNs)
	fl.LastNs = max(fl.LastNs, f.TimeNs)
	fl.Packets++
	fl.Bytes += int64(max(f.OrigLen, len(f.Data)))
}

// cutFrame compresses the section in progress as one seekable frame.
func (c *chunk) cutFrame() {
	if c.pending() == 0 {
		return
	}
	sec := c.w.Bytes()
	if len(c.sec) > 0 {
		c.sec = append(c.sec, sec...)
		sec = c.sec
	}
	off := len(c.obj)
	if cap(c.obj)-off < len(sec)+len(sec)/64+64 {
		// Grow to what the whole chunk will need at the ratio seen so
		// far (at least this frame uncompressed), so the compressed data
		// is written once and rarely moved.
		est := len(sec) + len(sec)/64 + 64
		if off > 0 && c.idx.UncompressedSize > 0 {
			est = max(est, int(float64(off)/float64(c.idx.UncompressedSize)*float64(c.p.chunkBytes)*1.1))
		}
		obj := append(c.p.buffer(off+est), c.obj...)
		c.p.release(c.obj)
		c.obj = obj
	}
	var e seekable.Entry
	c.obj, e = c.enc.AppendFrame(c.obj, sec)
	c.entries = append(c.entries, e)
	c.cur.Offset = int64(off)
	c.cur.Size = int64(e.CompressedSize)
	c.cur.USize = int64(e.DecompressedSize)
	c.cur.XXH = e.Checksum
	c.idx.Frames = append(c.idx.Frames, c.cur)
	c.idx.UncompressedSize += c.cur.USize
	c.cur = index.Frame{FirstPacket: c.idx.Packets}
	c.w.Reset()
	c.sec = c.sec[:0]
}

// sealed is a finished chunk (or a rejected batch) waiting to be stored.
type sealed struct {
	key     string
	data    []byte
	idxKey  string
	idxJSON []byte
	idx     *index.Index
	grp     *group
}

// seal finishes the chunk: the last frame, the seek table and the index.
func (c *chunk) seal(now time.Time) (*sealed, error) {
	c.cutFrame()
	c.p.writers.Put(c.w)
	c.w = nil
	obj := seekable.AppendSeekTable(c.obj, c.entries)
	c.idx.CompressedSize = int64(len(obj))
	c.idx.Chunk = index.ChunkKey(c.key.vni, c.idx.FirstNs, c.idx.LastNs, c.idx.FirstSeq, c.idx.LastSeq)
	c.idx.Flows = make([]index.Flow, 0, len(c.flows))
	for _, f := range c.flows {
		c.idx.Flows = append(c.idx.Flows, *f)
	}
	slices.SortFunc(c.idx.Flows, func(a, b index.Flow) int {
		return cmp.Or(cmp.Compare(a.FirstNs, b.FirstNs), a.Src.Compare(b.Src), a.Dst.Compare(b.Dst),
			cmp.Compare(a.SrcPort, b.SrcPort), cmp.Compare(a.DstPort, b.DstPort), cmp.Compare(a.Proto, b.Proto))
	})
	c.idx.Created = now.UTC()
	if err := c.idx.Validate(); err != nil {
		return nil, err
	}
	js, err := c.idx.Encode()
	if err != nil {
		return nil, err
	}
	return &sealed{key: c.idx.Chunk, data: obj, idxKey: index.IndexKey(c.idx.Chunk), idxJSON: js, idx: &c.idx, grp: c.grp}, nil
}
