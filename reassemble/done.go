package reassemble

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tcp"
)

// Records of closed connections for the next owner of a shard.
//
// A frame batch is acknowledged only when no open connection has frames
// in it, so a batch shared with a connection still open at a crash comes
// back to the successor with the frames of connections that had closed —
// or had been continued by a resumed connection — long before, and whose
// own batches were acknowledged. Rebuilt from those frames alone they
// came out with holes reported as mirror loss, under their old ids with
// other message numbers (Msg-Ids colliding with the first owner's), with
// a second, different close, or split into several ids (soak runs 5, 6,
// 8, 9, 11 in docs/bench/e2e.md).
//
// So when a connection closes and its frames may come back (a batch of
// it is held by another connection, it did not hold its batches, or a
// later connection on the 5-tuple continues it), the shard publishes a
// record of it to the key-value bucket TAPLINE_REASSEMBLE_DONE, through
// the shard's publisher and before its batches are released: the
// connection id, the close reason, the position (stream sequence, frame
// index) of its last frame and, for a close a continuation resumes, the
// TCP sequence state and the decoder's handshake. An instance that starts
// receiving a shard reads the shard's records once, before it processes
// any batch; its tracker then skips the frames up to each record's
// position and continues a resumed connection as the first owner did,
// under the same id and message numbers. A resumed connection is
// therefore rebuildable, and holds its batches like any other. Records
// are deleted once every batch up to their position is acknowledged and
// no continuation can need them.

// doneBucket is the key-value bucket of the records.
const doneBucket = "TAPLINE_REASSEMBLE_DONE"

// posShift places the stream sequence above the frame index in a
// tracker position.
const posShift = 20

// framePos is the tracker position of frame i of the batch at stream
// sequence seq.
func framePos(seq uint64, i int) uint64 {
	return seq<<posShift | uint64(min(i, 1<<posShift-1))
}

// doneRecord is one record of the bucket.
type doneRecord struct {
	TCP    *tcp.Record     `json:"tcp"`
	Resume *message.Resume `json:"resume,omitempty"`
}

// seq is the stream sequence of the batch of the connection's last frame.
func (r *doneRecord) seq() uint64 { return r.TCP.Pos >> posShift }

// openDoneBucket provisions the bucket (idempotent).
func openDoneBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	ttl := cfg.Common.Streams.Frames.MaxAge
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	storage := jetstream.FileStorage
	if cfg.Common.Streams.Memory {
		storage = jetstream.MemoryStorage
	}
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      doneBucket,
		Description: "tapline reassemble: connections closed whose frames a shard's next owner may get again",
		History:     1,
		TTL:         ttl, // a record outlives no frame batch it is about
		Storage:     storage,
		Replicas:    max(cfg.Common.Streams.Replicas, 1),
	})
}

// donePrefix is the key prefix of the shard's records: the consumer name,
// so deployments with other --consumer prefixes on one server stay apart.
func (w *worker) donePrefix() string {
	b := []byte(w.consName)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// doneKey is the record's key: one per shard and 5-tuple (a later close
// on the 5-tuple replaces the record of an earlier one).
func (w *worker) doneKey(r *tcp.Record) string {
	t := strconv.FormatUint(uint64(r.VNI), 10) + "/" + r.A.String() + "/" + r.B.String()
	return w.donePrefix() + "." + base64.RawURLEncoding.EncodeToString([]byte(t))
}

// record returns the record of c, closed for reason at tsNs; nil when
// records are off (--max-held-batches 0: nothing is held).
func (w *worker) record(c *conn, reason string, tsNs int64) *doneRecord {
	if w.e.kv == nil {
		return nil
	}
	r := &doneRecord{TCP: c.tc.Record(reason, tsNs)}
	switch carry := c.tc.Carry.(type) {
	case *message.Resume:
		r.Resume = carry
	case nil:
	default:
		r.TCP.Halves = nil // a decrypted TLS connection: not continued
	}
	return r
}

// mayComeBack reports whether a successor may get frames of the closed
// connection c again after its own batches are acknowledged: it did not
// hold its batches, a batch it holds (or the one being processed) is held
// by another connection too, or a later connection continues it.
func (w *worker) mayComeBack(c *conn, r *doneRecord) bool {
	if !c.replayable || len(r.TCP.Halves) > 0 {
		return true
	}
	for _, b := range c.holds {
		if b.holders > 1 {
			return true
		}
	}
	return w.heldByOthers(c, w.cur)
}

// heldByOthers reports whether an open connection other than c holds b.
func (w *worker) heldByOthers(c *conn, b *batch) bool {
	if b == nil {
		return false
	}
	n := b.holders
	if k := len(c.holds); k > 0 && c.holds[k-1] == b {
		n--
	}
	return n > 0
}

// retiring is a connection closed while a batch is processed, whose
// record is decided at the end of the batch: a later frame of the batch
// may make another connection hold it.
type retiring struct {
	c   *conn
	r   *doneRecord
	tok *batch
}

// retire publishes the close event of c and, when its frames may come
// back to a successor, its record first; c's batches (and the batch being
// processed) are released only once both are stored, so no batch of it
// is acknowledged before a successor could know it ended.
func (w *worker) retire(c *conn, closeMsg *nats.Msg, r *doneRecord) {
	cur := w.cur
	if cur != nil {
		cur.refs++
	}
	rel := c.released // batches it stopped holding, not released yet
	c.released = nil
	tok := &batch{refs: 1, done: func() {
		w.releaseHolds(c)
		for _, h := range rel {
			w.release(h)
		}
		if cur != nil {
			w.release(cur)
		}
	}}
	recorded := r != nil && w.mayComeBack(c, r)
	if recorded {
		w.putDone(r, tok)
	}
	if closeMsg != nil {
		w.publishFor(closeMsg, tok)
	}
	if cur != nil && r != nil && !recorded {
		w.retiring = append(w.retiring, retiring{c, r, tok})
		return
	}
	w.release(tok)
}

// endBatch decides the records of the connections closed in the batch
// just processed.
func (w *worker) endBatch(b *batch) {
	for _, rt := range w.retiring {
		if w.heldByOthers(rt.c, b) {
			w.putDone(rt.r, rt.tok)
		}
		w.release(rt.tok)
	}
	clear(w.retiring)
	w.retiring = w.retiring[:0]
}

// putDone queues the record's put, released with tok.
func (w *worker) putDone(r *doneRecord, tok *batch) {
	data, err := json.Marshal(r)
	if err != nil {
		w.e.log.Error("encode connection record", "err", err)
		return
	}
	key := w.doneKey(r.TCP)
	if w.done == nil {
		w.done = map[string]*doneRecord{}
	}
	w.done[key] = r
	w.publishFor(&nats.Msg{Subject: "$KV." + doneBucket + "." + key, Data: data}, tok)
}

// noteUnheld remembers that c, open and not holding its batches, has
// frames in the batch being processed (see recordUnheld).
func (w *worker) noteUnheld(c *conn) {
	if w.e.kv == nil || c.unheldIn == w.cur {
		return
	}
	c.unheldIn = w.cur
	w.unheld = append(w.unheld, c)
}

// recordUnheld puts, with the batch just processed, the record of every
// open connection that had frames in it without holding it: its batches
// are acknowledged as they are processed, while batches it shares with
// other connections stay held and would come back to a successor. The
// successor skips what this instance processed of it and continues it
// after that as a resumed connection (its first id then has no close).
// Only connections past --max-held-batches (or continuing a decrypted TLS
// one) do not hold.
func (w *worker) recordUnheld(b *batch) {
	for _, c := range w.unheld {
		c.unheldIn = nil
		if c.closed {
			continue // its close has its record (retire)
		}
		r := &doneRecord{TCP: c.tc.Record(tcp.RecordOpen, w.tr.Now())}
		dec := c.dec
		if c.tls != nil {
			dec = c.tls.inner
			if c.tls.mode == tlsOn || c.tls.mode == tlsLost {
				dec, r.TCP.Halves = nil, nil // a decrypted TLS connection: not continued
			}
		}
		if dec != nil {
			r.Resume = message.Snapshot(dec, c.meta.Conn)
		}
		hs := c.released
		c.released = nil
		b.refs++
		tok := &batch{refs: 1, done: func() {
			for _, h := range hs {
				w.release(h)
			}
			w.release(b)
		}}
		w.putDone(r, tok)
		w.release(tok)
	}
	clear(w.unheld)
	w.unheld = w.unheld[:0]
}

// loadDone reads the shard's records once, when this instance starts
// receiving the shard, and gives them to the tracker. Bounded: a bucket
// that does not answer in time is logged and the shard goes on without
// (as before records existed).
func (w *worker) loadDone() {
	if w.e.kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kw, err := w.e.kv.Watch(ctx, w.donePrefix()+".>", jetstream.IgnoreDeletes())
	if err != nil {
		w.e.log.Warn("connection records not read: connections closed before the previous owner stopped may be rebuilt again", "shard", w.shard, "err", err)
		return
	}
	defer func() { _ = kw.Stop() }()
	n := 0
	for {
		select {
		case e, ok := <-kw.Updates():
			if !ok || e == nil {
				if n > 0 {
					w.e.log.Info("connection records of the previous owner read", "shard", w.shard, "records", n)
				}
				return
			}
			var r doneRecord
			if err := json.Unmarshal(e.Value(), &r); err != nil || r.TCP == nil {
				w.e.log.Warn("bad connection record", "shard", w.shard, "key", e.Key(), "err", err)
				continue
			}
			var carry any
			if r.Resume != nil {
				carry = r.Resume
			}
			w.tr.Restore(r.TCP, carry)
			if w.done == nil {
				w.done = map[string]*doneRecord{}
			}
			w.done[e.Key()] = &r
			n++
		case <-ctx.Done():
			w.e.log.Warn("connection records not read in time: connections closed before the previous owner stopped may be rebuilt again", "shard", w.shard, "read", n)
			return
		}
	}
}

// pruneDone deletes the records no batch can refer to any more: every
// batch up to their position is acknowledged (ackFloor, the consumer's
// stream ack floor) and no continuation of their connection may need
// them.
func (w *worker) pruneDone(ackFloor uint64) {
	for key, r := range w.done {
		if r.seq() > ackFloor || w.tr.Awaits(r.TCP) {
			continue
		}
		delete(w.done, key)
		w.tr.Release(r.TCP)
		m := &nats.Msg{Subject: "$KV." + doneBucket + "." + key, Header: nats.Header{}}
		m.Header.Set("KV-Operation", "DEL")
		w.publishFor(m, nil)
	}
}
