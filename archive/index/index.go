// Package index defines the archive's object layout and the JSON index
// object written beside every chunk: what the chunk holds (time range,
// packet and byte counts, flows), which JetStream messages it was built
// from, and the time-to-offset map of its seekable zstd frames, so a query
// fetches only the byte ranges that can match.
package index

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Version is the index format version written in every index.
const Version = 1

// MaxSize bounds the size of an index object a reader accepts.
const MaxSize = 64 << 20

// Object name suffixes.
const (
	ChunkSuffix = ".pcapng.zst"
	IndexSuffix = ".idx.json"
)

// ErrFormat wraps every error about a malformed index.
var ErrFormat = errors.New("index: malformed")

// Index describes one chunk.
type Index struct {
	Version int `json:"version"`
	// Chunk is the chunk object's key, relative to the archive prefix.
	Chunk string `json:"chunk"`
	// VNI the chunk holds frames of (from the frames subject).
	VNI uint32 `json:"vni"`
	// Stream is the JetStream stream the frames came from; FirstSeq and
	// LastSeq the lowest and highest stream sequence in Msgs.
	Stream   string `json:"stream"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// FirstNs and LastNs are the earliest and latest capture time of a
	// packet in the chunk (ns since the Unix epoch).
	FirstNs int64 `json:"first_ns"`
	LastNs  int64 `json:"last_ns"`
	// Packets, CapturedBytes (frame bytes as captured) and WireBytes (their
	// original lengths).
	Packets       int64 `json:"packets"`
	CapturedBytes int64 `json:"captured_bytes"`
	WireBytes     int64 `json:"wire_bytes"`
	// UncompressedSize is the size of the pcapng data; CompressedSize the
	// size of the chunk object (frames and seek table).
	UncompressedSize int64 `json:"uncompressed_size"`
	CompressedSize   int64 `json:"compressed_size"`
	// Frames is the time-to-offset map: one entry per seekable zstd frame,
	// in object order. Each frame decompresses to one complete pcapng
	// section.
	Frames []Frame `json:"frames"`
	// Msgs lists the frame batches (JetStream messages) in the chunk in
	// the order their packets appear (usually increasing sequence; a
	// redelivered message can come later): [stream sequence, packets]. Packet
	// number p of the chunk belongs to the message whose running packet
	// count passes p. A query uses it to drop packets of a message that
	// another chunk also holds (after a crash between store and ack).
	Msgs [][2]uint64 `json:"msgs"`
	// Flows are the chunk's IP flows (at most a configured number; when
	// more, FlowsTruncated is set and a flow filter cannot skip the chunk).
	Flows          []Flow `json:"flows"`
	FlowsTruncated bool   `json:"flows_truncated,omitempty"`
	// NonIPPackets counts packets with no IP flow (ARP, malformed, …).
	NonIPPackets int64 `json:"non_ip_packets,omitempty"`
	// Created is when the chunk was written (informational).
	Created time.Time `json:"created"`
}

// Frame is one seekable zstd frame of a chunk.
type Frame struct {
	// Offset and Size locate the compressed frame in the chunk object.
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
	// USize is the decompressed size; XXH the low 32 bits of the XXH64 of
	// the decompressed frame (as in the seek table).
	USize int64  `json:"usize"`
	XXH   uint32 `json:"xxh"`
	// FirstNs and LastNs bound the capture times of the frame's packets.
	FirstNs int64 `json:"first_ns"`
	LastNs  int64 `json:"last_ns"`
	// FirstPacket is the chunk-wide number of the frame's first packet;
	// Packets how many it holds.
	FirstPacket int64 `json:"first_packet"`
	Packets     int64 `json:"packets"`
}

// Flow is one IP flow seen in a chunk, in the direction of its first packet.
type Flow struct {
	Proto   uint8      `json:"proto"`
	Src     netip.Addr `json:"src"`
	SrcPort uint16     `json:"sport"`
	Dst     netip.Addr `json:"dst"`
	DstPort uint16     `json:"dport"`
	FirstNs int64      `json:"first_ns"`
	LastNs  int64      `json:"last_ns"`
	Packets int64      `json:"packets"`
	Bytes   int64      `json:"bytes"`
}

// Encode returns the JSON of the index.
func (x *Index) Encode() ([]byte, error) { return json.Marshal(x) }

// Decode parses and validates an index object.
func Decode(b []byte) (*Index, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the limit", ErrFormat, len(b))
	}
	var x Index
	if err := json.Unmarshal(b, &x); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if err := x.Validate(); err != nil {
		return nil, err
	}
	return &x, nil
}

// Validate checks the index is self-consistent, so readers can trust its
// offsets and counts.
func (x *Index) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrFormat}, a...)...) }
	if x.Version != Version {
		return bad("version %d, want %d", x.Version, Version)
	}
	if !strings.HasSuffix(x.Chunk, ChunkSuffix) {
		return bad("chunk key %q", x.Chunk)
	}
	if x.FirstSeq > x.LastSeq || x.FirstNs > x.LastNs || x.Packets < 0 || x.CompressedSize < 0 {
		return bad("inverted ranges or negative counts")
	}
	var off, usize, pkts int64
	for i, f := range x.Frames {
		if f.Offset != off || f.Size <= 0 || f.USize < 0 || f.Packets < 0 || f.FirstPacket != pkts || f.FirstNs > f.LastNs {
			return bad("frame %d is inconsistent", i)
		}
		if f.Packets > 0 && (f.FirstNs < x.FirstNs || f.LastNs > x.LastNs) {
			return bad("frame %d is outside the chunk's time range", i)
		}
		off += f.Size
		usize += f.USize
		pkts += f.Packets
		if off < 0 || usize < 0 || pkts < 0 {
			return bad("overflow")
		}
	}
	if pkts != x.Packets || usize != x.UncompressedSize || off > x.CompressedSize {
		return bad("frames do not add up to the chunk's totals")
	}
	var mp uint64
	var seen map[uint64]bool
	for i, m := range x.Msgs {
		if m[0] < x.FirstSeq || m[0] > x.LastSeq {
			return bad("message %d sequence out of range", i)
		}
		// Usually increasing; a redelivered message may come later.
		if i > 0 && m[0] <= x.Msgs[i-1][0] && seen == nil {
			seen = make(map[uint64]bool, len(x.Msgs))
			for _, p := range x.Msgs[:i] {
				seen[p[0]] = true
			}
		}
		if seen != nil {
			if seen[m[0]] {
				return bad("message %d listed twice", m[0])
			}
			seen[m[0]] = true
		}
		if m[1] > uint64(x.Packets) {
			return bad("message %d holds more packets than the chunk", i)
		}
		mp += m[1]
		if mp > uint64(x.Packets) {
			return bad("messages hold more packets than the chunk")
		}
	}
	if mp != uint64(x.Packets) {
		return bad("messages hold %d packets, chunk %d", mp, x.Packets)
	}
	return nil
}

// MsgOf returns a function mapping a chunk-wide packet number to the
// stream sequence of its message (0 when out of range). Packet numbers must
// be asked in increasing order for each returned function.
func (x *Index) MsgOf() func(p int64) uint64 {
	i := 0
	var end uint64
	if len(x.Msgs) > 0 {
		end = x.Msgs[0][1]
	}
	return func(p int64) uint64 {
		for i < len(x.Msgs) && uint64(p) >= end {
			i++
			if i < len(x.Msgs) {
				end += x.Msgs[i][1]
			}
		}
		if i >= len(x.Msgs) || p < 0 {
			return 0
		}
		return x.Msgs[i][0]
	}
}

// Partition is the key prefix of a VNI and hour:
// "vni=<vni>/date=YYYY-MM-DD/hour=HH/".
func Partition(vni uint32, t time.Time) string {
	t = t.UTC()
	return fmt.Sprintf("vni=%d/date=%s/hour=%02d/", vni, t.Format("2006-01-02"), t.Hour())
}

// ChunkKey is the key of a chunk, relative to the archive prefix:
//
//	vni=<vni>/date=YYYY-MM-DD/hour=HH/<first seq>-<last seq>_<first>-<last>.pcapng.zst
//
// Sequences are zero-padded to 20 digits so keys sort by sequence; <first>
// and <last> are the capture times of the chunk's first and last packets
// within the hour as MMSS.nnnnnnnnn, so a listing prunes by time without
// reading indexes. The hour is the UTC hour of every packet in the chunk.
// The key depends only on the chunk's content, so rebuilding the same chunk
// after a crash writes the same key.
func ChunkKey(vni uint32, firstNs, lastNs int64, firstSeq, lastSeq uint64) string {
	return fmt.Sprintf("%s%020d-%020d_%s-%s%s", Partition(vni, time.Unix(0, firstNs)), firstSeq, lastSeq,
		inHour(firstNs), inHour(lastNs), ChunkSuffix)
}

func inHour(ns int64) string {
	t := time.Unix(0, ns).UTC()
	return fmt.Sprintf("%02d%02d.%09d", t.Minute(), t.Second(), t.Nanosecond())
}

// KeyInfo is what a chunk or index key says about the chunk.
type KeyInfo struct {
	VNI               uint32
	FirstSeq, LastSeq uint64
	FirstNs, LastNs   int64
}

// ParseKey reads a chunk or index key written by ChunkKey.
func ParseKey(key string) (KeyInfo, bool) {
	var k KeyInfo
	name, ok := strings.CutSuffix(key, ChunkSuffix)
	if !ok {
		if name, ok = strings.CutSuffix(key, IndexSuffix); !ok {
			return k, false
		}
	}
	parts := strings.Split(name, "/")
	if len(parts) < 4 {
		return k, false
	}
	parts = parts[len(parts)-4:]
	var y, mo, d, h int
	if v, ok := ParseVNIDir(parts[0]); ok {
		k.VNI = v
	} else {
		return k, false
	}
	if _, err := fmt.Sscanf(parts[1]+" "+parts[2], "date=%d-%d-%d hour=%d", &y, &mo, &d, &h); err != nil {
		return k, false
	}
	hour := time.Date(y, time.Month(mo), d, h, 0, 0, 0, time.UTC)
	var m1, s1, n1, m2, s2, n2 int64
	if _, err := fmt.Sscanf(parts[3], "%d-%d_%2d%2d.%d-%2d%2d.%d", &k.FirstSeq, &k.LastSeq, &m1, &s1, &n1, &m2, &s2, &n2); err != nil {
		return k, false
	}
	k.FirstNs = hour.UnixNano() + m1*int64(time.Minute) + s1*int64(time.Second) + n1
	k.LastNs = hour.UnixNano() + m2*int64(time.Minute) + s2*int64(time.Second) + n2
	return k, k.FirstSeq <= k.LastSeq && k.FirstNs <= k.LastNs
}

// IndexKey is the key of the index of the chunk at chunkKey.
func IndexKey(chunkKey string) string {
	return strings.TrimSuffix(chunkKey, ChunkSuffix) + IndexSuffix
}

// ParseVNIDir parses a "vni=<n>" key segment.
func ParseVNIDir(seg string) (uint32, bool) {
	s, ok := strings.CutPrefix(strings.TrimSuffix(seg, "/"), "vni=")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}
