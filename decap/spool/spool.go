// Package spool is decap capture's store-and-forward buffer: a bounded,
// append-only queue of frame batches in segment files on local disk,
// uploaded in order to JetStream (Upload) and deleted once JetStream has
// acknowledged them. It survives a restart of the process (kill -9
// included: a record torn by the kill is cut off at the next Open) and an
// outage of NATS (records wait on disk); only a full spool refuses
// records, and the caller counts them as loss.
//
// On disk: Dir/instance holds the spool's random id (the prefix of every
// Nats-Msg-Id, so a record sent again after a restart is deduplicated by
// JetStream), Dir/acked the sequence number of the first record not yet
// acknowledged, and Dir/<first sequence>.seg the segments. A record is
//
//	u32 length of the rest | u32 CRC-32C of the rest |
//	u64 sequence | i64 append time (ns) | u16 subject length | subject | data
//
// all big-endian.
package spool

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultMaxBytes     = 1 << 30
	DefaultSegmentBytes = 16 << 20
)

// MaxRecord bounds one record's data.
const MaxRecord = 8 << 20

const hdrLen = 4 + 4 + 8 + 8 + 2

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrFull is returned by Append when the record does not fit.
var ErrFull = errors.New("spool: full")

// Config bounds a spool.
type Config struct {
	// Dir holds the spool (created if missing).
	Dir string
	// MaxBytes bounds the records not yet acknowledged (0:
	// DefaultMaxBytes). The disk holds at most MaxBytes plus one segment.
	MaxBytes int64
	// SegmentBytes is the size at which a segment is closed (0:
	// DefaultSegmentBytes, at most MaxBytes/4).
	SegmentBytes int64
}

// Record is one spooled frame batch.
type Record struct {
	Seq      uint64
	AppendNs int64
	Subject  string
	Data     []byte
	size     int64
}

// Size is the record's size on disk.
func (r *Record) Size() int64 { return r.size }

type segment struct {
	first uint64 // sequence of its first record
	path  string
	size  int64
}

// Spool is an open spool. Append and the reading methods (Next, Rewind,
// Commit, used by one uploader) are safe for concurrent use.
type Spool struct {
	cfg Config
	id  string

	mu      sync.Mutex
	cond    *sync.Cond
	closed  bool
	segs    []*segment
	w       *os.File // the last segment, open for appending
	next    uint64   // sequence of the next record appended
	acked   uint64   // every record before it is acknowledged
	ackedF  *os.File
	pending int64 // bytes of records from acked on
	peak    int64

	// read position: the next record Next returns
	rseq uint64
	rseg int
	roff int64
	rf   *os.File // open segment being read (rseg), or nil

	// oldest unacknowledged record's append time (0: none known)
	headNs int64
}

// Open opens (or creates) the spool in cfg.Dir, cutting off a torn record
// at the end, and positions reading at the first unacknowledged record.
func Open(cfg Config) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("spool: no directory")
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = min(DefaultSegmentBytes, cfg.MaxBytes/4)
	}
	if cfg.MaxBytes < 1<<16 || cfg.SegmentBytes < 1<<12 {
		return nil, fmt.Errorf("spool: MaxBytes (%d) must be at least 64 KiB and SegmentBytes (%d) at least 4 KiB", cfg.MaxBytes, cfg.SegmentBytes)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{cfg: cfg}
	s.cond = sync.NewCond(&s.mu)
	var err error
	if s.id, err = instanceID(cfg.Dir); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func instanceID(dir string) (string, error) {
	p := filepath.Join(dir, "instance")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(r[:])
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	return id, nil
}

// ID is the spool's instance id.
func (s *Spool) ID() string { return s.id }

func (s *Spool) load() error {
	var err error
	s.ackedF, err = os.OpenFile(filepath.Join(s.cfg.Dir, "acked"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var b [8]byte
	if n, _ := s.ackedF.ReadAt(b[:], 0); n == 8 {
		s.acked = binary.BigEndian.Uint64(b[:])
	}
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		s.segs = append(s.segs, &segment{first: first, path: filepath.Join(s.cfg.Dir, e.Name()), size: info.Size()})
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].first < s.segs[j].first })
	// Segments wholly acknowledged (the next one starts at or before
	// acked) go.
	for len(s.segs) > 1 && s.segs[1].first <= s.acked {
		_ = os.Remove(s.segs[0].path)
		s.segs = s.segs[1:]
	}
	s.next = s.acked
	if n := len(s.segs); n > 0 {
		last := s.segs[n-1]
		// Scan the last segment: its valid records give the next
		// sequence; a torn record at its end is cut off.
		seq, end, err := scan(last)
		if err != nil {
			return err
		}
		if end < last.size {
			if err := os.Truncate(last.path, end); err != nil {
				return fmt.Errorf("spool: cut torn record: %w", err)
			}
			last.size = end
		}
		s.next = max(seq, s.acked)
		if s.w, err = os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	if s.acked > s.next {
		s.acked = s.next
	}
	if err := s.seek(s.acked); err != nil {
		return err
	}
	// Pending: from the read position to the end.
	for i := s.rseg; i < len(s.segs); i++ {
		s.pending += s.segs[i].size
	}
	if s.rseg < len(s.segs) {
		s.pending -= s.roff
	}
	s.peak = s.pending
	return nil
}

// scan reads a segment's records and returns the sequence after its last
// valid one and the offset where valid records end.
func scan(seg *segment) (next uint64, end int64, err error) {
	f, err := os.Open(seg.path)
	if err != nil {
		return 0, 0, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	next = seg.first
	for {
		r, n, err := readAt(f, end)
		if err != nil {
			return next, end, nil // end of file or torn record
		}
		if r.Seq != next {
			return next, end, nil
		}
		next++
		end += n
	}
}

var errTorn = errors.New("spool: torn or corrupt record")

// readAt reads the record at off.
func readAt(f *os.File, off int64) (Record, int64, error) {
	var h [8]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		return Record{}, 0, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n < hdrLen-8 || n > MaxRecord+hdrLen+1<<16 {
		return Record{}, 0, errTorn
	}
	body := make([]byte, n)
	if _, err := f.ReadAt(body, off+8); err != nil {
		return Record{}, 0, errTorn
	}
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(h[4:8]) {
		return Record{}, 0, errTorn
	}
	sl := int(binary.BigEndian.Uint16(body[16:18]))
	if 18+sl > len(body) {
		return Record{}, 0, errTorn
	}
	return Record{
		Seq:      binary.BigEndian.Uint64(body[0:8]),
		AppendNs: int64(binary.BigEndian.Uint64(body[8:16])),
		Subject:  string(body[18 : 18+sl]),
		Data:     body[18+sl:],
		size:     int64(n) + 8,
	}, int64(n) + 8, nil
}

// Append adds a record. It returns ErrFull, and stores nothing, when the
// record would take the unacknowledged bytes past MaxBytes.
func (s *Spool) Append(subject string, data []byte) error {
	if len(data) > MaxRecord || len(subject) > 1<<16-1 {
		return fmt.Errorf("spool: record too large (%d bytes)", len(data))
	}
	size := int64(hdrLen + len(subject) + len(data))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("spool: closed")
	}
	if s.pending+size > s.cfg.MaxBytes {
		return ErrFull
	}
	if s.w == nil || s.segs[len(s.segs)-1].size >= s.cfg.SegmentBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	buf := make([]byte, size)
	binary.BigEndian.PutUint32(buf[0:4], uint32(size-8))
	now := time.Now().UnixNano()
	binary.BigEndian.PutUint64(buf[8:16], s.next)
	binary.BigEndian.PutUint64(buf[16:24], uint64(now))
	binary.BigEndian.PutUint16(buf[24:26], uint16(len(subject)))
	copy(buf[26:], subject)
	copy(buf[26+len(subject):], data)
	binary.BigEndian.PutUint32(buf[4:8], crc32.Checksum(buf[8:], crcTable))
	seg := s.segs[len(s.segs)-1]
	if _, err := s.w.Write(buf); err != nil {
		// Cut a partial write so the segment stays readable.
		_ = os.Truncate(seg.path, seg.size)
		return fmt.Errorf("spool: write: %w", err)
	}
	seg.size += size
	s.next++
	s.pending += size
	s.peak = max(s.peak, s.pending)
	if s.headNs == 0 {
		s.headNs = now
	}
	s.cond.Broadcast()
	return nil
}

// rotate starts a new segment at s.next.
func (s *Spool) rotate() error {
	p := filepath.Join(s.cfg.Dir, fmt.Sprintf("%020d.seg", s.next))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if s.w != nil {
		s.w.Close()
	}
	s.w = f
	s.segs = append(s.segs, &segment{first: s.next, path: p})
	return nil
}

// Next returns the next record to upload, waiting until there is one or
// ctx ends.
func (s *Spool) Next(ctx context.Context) (Record, error) {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.rseq >= s.next && !s.closed && ctx.Err() == nil {
		s.cond.Wait()
	}
	if ctx.Err() != nil {
		return Record{}, ctx.Err()
	}
	if s.closed {
		return Record{}, errors.New("spool: closed")
	}
	return s.readLocked()
}

// TryNext is Next without waiting: ok is false when no record is ready.
func (s *Spool) TryNext() (r Record, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rseq >= s.next || s.closed {
		return Record{}, false, nil
	}
	r, err = s.readLocked()
	return r, err == nil, err
}

func (s *Spool) readLocked() (Record, error) {
	for {
		if s.rseg >= len(s.segs) {
			return Record{}, fmt.Errorf("spool: record %d missing", s.rseq)
		}
		seg := s.segs[s.rseg]
		if s.roff >= seg.size && s.rseg+1 < len(s.segs) {
			s.rseg++
			s.roff = 0
			if s.rf != nil {
				s.rf.Close()
				s.rf = nil
			}
			continue
		}
		if s.rf == nil {
			f, err := os.Open(seg.path)
			if err != nil {
				return Record{}, fmt.Errorf("spool: %w", err)
			}
			s.rf = f
		}
		r, n, err := readAt(s.rf, s.roff)
		if err != nil {
			return Record{}, fmt.Errorf("spool: read record %d: %w", s.rseq, err)
		}
		if r.Seq != s.rseq {
			return Record{}, fmt.Errorf("spool: record %d found where %d was expected", r.Seq, s.rseq)
		}
		s.roff += n
		s.rseq++
		return r, nil
	}
}

// seek positions reading at record seq (which must not be acknowledged).
func (s *Spool) seek(seq uint64) error {
	if s.rf != nil {
		s.rf.Close()
		s.rf = nil
	}
	s.rseg, s.roff, s.rseq = 0, 0, seq
	if len(s.segs) == 0 {
		return nil
	}
	for s.rseg+1 < len(s.segs) && s.segs[s.rseg+1].first <= seq {
		s.rseg++
	}
	seg := s.segs[s.rseg]
	f, err := os.Open(seg.path)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	for q := seg.first; q < seq; q++ {
		_, n, err := readAt(f, s.roff)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("spool: seek to %d: %w", seq, err)
		}
		s.roff += n
	}
	if r, _, err := readAt(f, s.roff); err == nil {
		s.headNs = r.AppendNs
	}
	return nil
}

// Rewind makes Next return record seq (the first record whose upload
// failed) and the ones after it again.
func (s *Spool) Rewind(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < s.acked {
		seq = s.acked
	}
	return s.seek(seq)
}

// Commit records that every record up to and including r is acknowledged
// (records are committed in order): their bytes are freed and segments
// wholly acknowledged deleted.
func (s *Spool) Commit(r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Seq < s.acked {
		return nil
	}
	if r.Seq != s.acked {
		return fmt.Errorf("spool: commit of %d before %d", r.Seq, s.acked)
	}
	s.acked = r.Seq + 1
	s.pending -= r.size
	s.headNs = 0
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], s.acked)
	if _, err := s.ackedF.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for len(s.segs) > 1 && s.segs[1].first <= s.acked {
		_ = os.Remove(s.segs[0].path)
		s.segs = s.segs[1:]
		if s.rseg > 0 {
			s.rseg--
		} else {
			// The reader had read the whole deleted segment (its records
			// are acknowledged) without moving on yet: it goes on at the
			// start of the next one.
			s.roff = 0
			if s.rf != nil {
				s.rf.Close()
				s.rf = nil
			}
		}
	}
	return nil
}

// NoteHead records the append time of the oldest unacknowledged record
// (the uploader knows it from the record it sends next).
func (s *Spool) NoteHead(appendNs int64) {
	s.mu.Lock()
	s.headNs = appendNs
	s.mu.Unlock()
}

// Stats are a spool's current figures.
type Stats struct {
	// Pending bytes not yet acknowledged, and their peak since Open.
	Pending, Peak int64
	// Records not yet acknowledged.
	Records uint64
	// HeadAge is how long the oldest unacknowledged record has waited
	// (0 when none is pending).
	HeadAge time.Duration
	// Segments on disk.
	Segments int
}

// Stats returns the spool's figures.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Pending: s.pending, Peak: s.peak, Records: s.next - s.acked, Segments: len(s.segs)}
	if st.Records > 0 && s.headNs != 0 {
		st.HeadAge = time.Since(time.Unix(0, s.headNs))
	}
	return st
}

// ResetPeak starts a new peak measurement at the current size.
func (s *Spool) ResetPeak() {
	s.mu.Lock()
	s.peak = s.pending
	s.mu.Unlock()
}

// Close closes the files; Next returns an error.
func (s *Spool) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.cond.Broadcast()
	for _, f := range []*os.File{s.w, s.rf, s.ackedF} {
		if f != nil {
			f.Close()
		}
	}
}
