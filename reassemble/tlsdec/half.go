package tlsdec

import (
	"time"
)

// Key levels of a direction.
const (
	lvlPlain = iota // handshake in plaintext
	lvlEarly        // TLS 1.3 0-RTT (client)
	lvlHS           // TLS 1.3 encrypted handshake
	lvlApp          // application traffic (TLS 1.2: everything after ChangeCipherSpec)
)

// item kinds of a direction's queue.
const (
	itemRecord = iota
	itemLost   // a record whose header was seen and (part of) its body lost
	itemResync // the next record boundary is unknown: search rbuf
)

type item struct {
	kind     int
	borrowed bool   // body is the caller's stream bytes (see direct): never written to, not kept
	ord      uint64 // arrival order over both directions
	hdr      [5]byte
	body     []byte
	at       time.Time
}

func (it *item) typ() byte   { return it.hdr[0] }
func (it *item) length() int { return int(it.hdr[3])<<8 | int(it.hdr[4]) }
func (it *item) size() int64 { return int64(len(it.body)) }
func hdrLen(h []byte) int    { return int(h[3])<<8 | int(h[4]) }
func validHeader(h []byte) bool {
	return h[0] >= recordCCS && h[0] <= recordAppData && h[1] == 3 && h[2] <= 4 && hdrLen(h) <= maxCiphertext
}

// half is one direction: the record parser over the reassembled stream,
// the queue of records not processed yet (waiting for the ServerHello or
// for keys), and the record protection state.
type half struct {
	c   *Conn
	dir int

	// parser
	hdr  [5]byte
	hn   int
	body []byte
	need int
	skip int64 // bytes still to come of a record lost in a gap

	resync bool   // the parser lost the record boundary; bytes go to rbuf
	rbuf   []byte // bytes after the loss, searched for the next record
	rpos   int    // first position of rbuf not yet tried
	rlost  int64  // ciphertext bytes lost since the start of the first record lost
	rAt    time.Time

	queue  []*item
	qBytes int64

	// protection
	enc       bool
	lvl       int
	gen       int
	secret    []byte
	op        opener
	seq       uint64
	lossSeen  bool // a record of this direction was lost or given up: later ones may need the other epochs tried
	blind     bool // records were given up before the level was known: their loss is reported whatever the level
	uncertain int  // records given up without decrypting: the epoch and sequence number must be searched (this many at least)

	hsbuf []byte
	free  [][]byte // record bodies for reuse

	// TLS 1.3 records lost whose loss is not reported yet (see content)
	pendLost int64
	pendRecs int
	pendLen  int
	avgRec   float64
	stats    DirStats
	lastErr  string
	// closeNotify: the direction's protected close_notify alert was
	// decrypted; it sends no more application data.
	closeNotify bool
}

func (h *half) held() int64 { return h.qBytes + int64(len(h.rbuf)) }

func (h *half) memory() int64 {
	n := h.qBytes + int64(cap(h.rbuf)) + int64(cap(h.body)) + int64(cap(h.hsbuf)) + int64(cap(h.queue))*8
	for _, b := range h.free {
		n += int64(cap(b))
	}
	return n
}

// feed parses stream bytes into records.
func (h *half) feed(b []byte) {
	for len(b) > 0 {
		if h.resync {
			if len(h.rbuf) == 0 {
				h.rAt = h.c.now
			}
			h.rbuf = append(h.rbuf, b...)
			return
		}
		if h.skip > 0 {
			k := int64(len(b))
			if k > h.skip {
				k = h.skip
			}
			h.skip -= k
			b = b[k:]
			if h.skip == 0 {
				h.push(&item{kind: itemLost, hdr: h.hdr})
				h.hn = 0
			}
			continue
		}
		if h.hn == 0 && len(b) >= 5 && h.direct() {
			if n := hdrLen(b); b[0] == recordAppData && validHeader(b) && 5+n <= len(b) {
				h.decryptDirect(b[:5+n])
				b = b[5+n:]
				continue
			}
		}
		if h.hn < 5 {
			k := copy(h.hdr[h.hn:], b)
			h.hn += k
			b = b[k:]
			if h.hn < 5 {
				return
			}
			if !validHeader(h.hdr[:]) {
				// Not a record header where one must be: the stream is
				// not what it should be. Search the next boundary.
				h.stats.RecordsLost++
				h.startResync(int64(h.hn))
				h.hn = 0
				if len(b) > 0 {
					h.rAt = h.c.now
				}
				h.rbuf = append(h.rbuf, b...)
				return
			}
			h.need = hdrLen(h.hdr[:])
			h.body = h.takeBuf(h.need)
		}
		k := min(h.need-len(h.body), len(b))
		h.body = append(h.body, b[:k]...)
		b = b[k:]
		if len(h.body) == h.need {
			h.push(&item{kind: itemRecord, hdr: h.hdr, body: h.body})
			h.body, h.hn, h.need = nil, 0, 0
		}
	}
}

// direct reports whether a whole record in the stream bytes can be
// decrypted where it lies, without being copied into a record buffer
// and queued: application traffic with its keys, nothing queued in either
// direction (the arrival order over both is kept), no loss to search
// around.
func (h *half) direct() bool {
	c := h.c
	return c.haveKeys && c.failed == "" && h.enc && h.lvl == lvlApp && h.op != nil &&
		!h.lossSeen && h.uncertain == 0 && h.pendRecs == 0 &&
		len(c.h[0].queue) == 0 && len(c.h[1].queue) == 0
}

// decryptDirect decrypts one whole record r (header and body) of the
// caller's bytes into the scratch buffer.
func (h *half) decryptDirect(r []byte) {
	it := item{kind: itemRecord, borrowed: true, body: r[5:], at: h.c.now}
	copy(it.hdr[:], r[:5])
	h.c.ord++
	it.ord = h.c.ord
	h.decrypt(&it)
}

// takeBuf returns an empty buffer for a record body of n bytes, reusing
// the bodies of records already processed (no allocation or zeroing per
// record on the hot path).
func (h *half) takeBuf(n int) []byte {
	for i := len(h.free) - 1; i >= 0; i-- {
		if b := h.free[i]; cap(b) >= n {
			h.free[i] = h.free[len(h.free)-1]
			h.free = h.free[:len(h.free)-1]
			return b[:0]
		}
	}
	return make([]byte, 0, max(n, 1<<14+256))
}

// putBuf keeps a processed record's body for reuse.
func (h *half) putBuf(b []byte) {
	if cap(b) >= 1<<14 && len(h.free) < 4 {
		h.free = append(h.free, b)
	}
}

// gap handles n lost stream bytes.
func (h *half) gap(n int64) {
	if h.resync {
		// Candidates before the gap cannot span it: give them up.
		h.rlost += int64(len(h.rbuf)) + n
		h.rbuf, h.rpos = h.rbuf[:0], 0
		return
	}
	if h.skip > 0 {
		if n < h.skip {
			h.skip -= n
			return
		}
		n -= h.skip
		h.skip = 0
		h.push(&item{kind: itemLost, hdr: h.hdr})
		h.hn = 0
		if n == 0 {
			return
		}
	}
	switch {
	case h.hn == 5:
		rem := int64(h.need - len(h.body))
		h.body = nil
		if n < rem {
			h.skip = rem - n
			return
		}
		h.push(&item{kind: itemLost, hdr: h.hdr})
		h.hn, h.need = 0, 0
		n -= rem
		if n == 0 {
			return // the gap ended at the record's end: the next header follows
		}
		h.startResync(n)
	default:
		h.startResync(int64(h.hn) + n)
		h.hn = 0
	}
}

func (h *half) startResync(lost int64) {
	h.lossSeen = true
	h.resync = true
	h.rlost = lost
	h.rbuf, h.rpos = h.rbuf[:0], 0
	h.rAt = h.c.now
	h.push(&item{kind: itemResync, at: h.c.now})
}

func (h *half) push(it *item) {
	if it.at.IsZero() {
		it.at = h.c.now
	}
	h.c.ord++
	it.ord = h.c.ord
	h.queue = append(h.queue, it)
	h.qBytes += it.size()
}

func (h *half) pop() {
	h.qBytes -= h.queue[0].size()
	h.queue[0] = nil
	h.queue = h.queue[1:]
	if len(h.queue) == 0 {
		h.queue = nil
	}
}

// head returns the arrival order of the queue's head if it can be
// processed now.
func (h *half) head() (uint64, bool) {
	if len(h.queue) == 0 {
		return 0, false
	}
	it := h.queue[0]
	if it.kind == itemResync {
		return it.ord, h.ready(true)
	}
	return it.ord, h.ready(h.needsKeys(it))
}

// step processes the queue's head (head said it can); it reports
// progress.
func (h *half) step() bool {
	it := h.queue[0]
	if it.kind == itemResync {
		return h.searchResync()
	}
	h.pop()
	h.process(it)
	h.putBuf(it.body)
	return true
}

// needsKeys reports whether processing it needs the secrets.
func (h *half) needsKeys(it *item) bool {
	if h.enc {
		return true
	}
	if h.c.tls13() && (it.typ() == recordAppData || it.kind == itemResync) {
		return true
	}
	return it.kind == itemResync
}

// earlyHead reports whether the head record would be read with the 0-RTT
// keys: it waits until the server's EncryptedExtensions say whether the
// server accepted early data (rejected early data never reached the
// application and is not passed on).
func (h *half) earlyHead() bool {
	c := h.c
	if h.dir != ClientToServer || c.eeSeen || c.failed != "" || !c.tls13() || !c.haveKeys {
		return false
	}
	it := h.queue[0]
	if h.enc {
		return h.lvl == lvlEarly
	}
	return it.kind == itemRecord && it.typ() == recordAppData && h.firstLevel() == lvlEarly
}

// ready reports whether the head of the queue can be processed: the
// version is known (plaintext handshake records of a direction not yet
// encrypted never wait), and the keys are there when needed.
func (h *half) ready(keys bool) bool {
	c := h.c
	if c.failed != "" {
		return true
	}
	if !keys && !h.enc && len(h.queue) > 0 && h.queue[0].kind == itemRecord {
		switch t := h.queue[0].typ(); {
		case t == recordHandshake:
			return true
		case t == recordCCS && h.dir == ServerToClient && c.sh == nil && c.info.HelloRetry:
			return true // after a HelloRetryRequest: TLS 1.3 compatibility
		}
	}
	if !c.versionKnown() {
		return false
	}
	if !keys {
		return true
	}
	return c.keys() && !h.earlyHead()
}

// enforceHold gives up held items past the hold bounds.
func (h *half) enforceHold() {
	c := h.c
	for len(h.queue) > 0 {
		it := h.queue[0]
		over := c.h[0].held()+c.h[1].held() > c.lim.HoldBytes
		old := c.now.Sub(it.at) > c.lim.HoldTime
		if it.kind == itemResync {
			if len(h.rbuf) > 0 && (over || c.now.Sub(h.rAt) > c.lim.HoldTime) && !c.haveKeys {
				// The search cannot run without keys: what it holds is
				// given up.
				h.rlost += int64(len(h.rbuf))
				h.rbuf, h.rpos = h.rbuf[:0], 0
				c.undecryptable = true
			}
			return
		}
		if !over && !old {
			return
		}
		h.pop()
		h.giveUp(it)
	}
}

// giveUp drops a record that waited too long for its keys.
func (h *half) giveUp(it *item) {
	h.lossSeen = true
	h.flushLost()
	h.c.undecryptable = true
	h.stats.RecordsUndecryptable++
	if it.kind == itemLost {
		h.stats.RecordsLost++
	}
	if h.c.failed == "" && !h.enc && it.typ() == recordHandshake {
		return // plaintext handshake: nothing of the application lost
	}
	if h.enc {
		h.seq++
		h.uncertain++
	} else if h.c.tls13() && it.typ() == recordAppData {
		h.enc, h.lvl = true, h.firstLevel()
		h.seq = 1
		h.uncertain++
	}
	h.blind = h.blind || (h.enc && !h.c.haveKeys)
	h.loseRecs(int64(it.length()-h.overhead()), 1, ReasonUndecryptable)
}

func (h *half) overhead() int {
	if h.op != nil {
		return h.op.overhead()
	}
	if h.c.suite == nil {
		return 0
	}
	if h.c.tls13() {
		return 17
	}
	switch h.c.suite.cipher {
	case cipherAESGCM:
		return 24
	case cipherChaCha:
		return 16
	}
	return 16 + h.c.suite.macLen + 1
}

// loseRecs reports the loss of recs whole records holding at most n
// plaintext bytes (their ciphertext lengths less the fixed overhead): a
// CBC record's padding (1 to 256 bytes, only the last length byte is
// known) makes the plaintext up to 255 bytes shorter per record; AEAD
// records are exact (TLS 1.3: taken as unpadded).
func (h *half) loseRecs(n, recs int64, reason string) {
	h.loseRange(n, max(0, n-recs*h.padSlack()), reason)
}

// loseUnknown reports lost ciphertext of an unknown number of records:
// n bytes at most, perhaps none.
func (h *half) loseUnknown(n int64, reason string) { h.loseRange(n, 0, reason) }

// padSlack is how much shorter than the estimate a lost record's
// plaintext may be: the CBC padding beyond its one length byte.
func (h *half) padSlack() int64 {
	if h.c.suite != nil && !h.c.tls13() && h.c.suite.cipher == cipherAESCBC {
		return 255
	}
	return 0
}

// loseRange reports lost plaintext bytes of application data: n are
// passed on (the gap the decoder gets), least is the fewest there can
// have been (DirStats.LostBytesMin).
func (h *half) loseRange(n, least int64, reason string) {
	if n <= 0 {
		return
	}
	if !h.blind && (h.lvl == lvlHS || (!h.enc && h.c.failed == "")) {
		return // inside the handshake: no application data
	}
	h.stats.LostBytes += n
	h.stats.LostBytesMin += least
	h.c.sink.Lost(h.dir, n, reason)
}

// close ends the direction.
func (h *half) close() {
	defer h.flushLost()
	for len(h.queue) > 0 {
		it := h.queue[0]
		if it.kind == itemResync {
			h.pop()
			h.loseUnknown(h.rlost+int64(len(h.rbuf)), ReasonGap)
			h.rbuf = nil
			continue
		}
		h.pop()
		h.giveUp(it)
	}
	if h.hn > 0 || h.skip > 0 {
		h.stats.RecordsLost++
		if h.hn == 5 && h.enc {
			h.loseRecs(int64(h.need-h.overhead()), 1, ReasonGap)
		}
	}
	h.body, h.hn, h.skip = nil, 0, 0
}

// firstLevel is the level of the first protected record of a TLS 1.3
// direction.
func (h *half) firstLevel() int {
	if h.dir == ClientToServer && h.c.sec.ClientEarly != nil && h.c.ch != nil && h.c.ch.EarlyData {
		return lvlEarly
	}
	return lvlHS
}

// process handles one record in stream order.
func (h *half) process(it *item) {
	c := h.c
	if c.failed != "" {
		h.stats.RecordsUndecryptable++
		if it.kind == itemLost {
			h.stats.RecordsLost++
		}
		c.undecryptable = true
		if it.typ() == recordAppData {
			h.stats.LostBytes += int64(it.length())
			c.sink.Lost(h.dir, int64(it.length()-h.overhead()), ReasonUndecryptable)
		}
		return
	}
	if it.kind == itemLost {
		h.lossSeen = true
		h.stats.RecordsLost++
		h.hsbuf = h.hsbuf[:0]
		switch {
		case h.enc && c.tls13() && h.lvl == lvlApp:
			// Its content type is unknown until the next record shows
			// whether the keys changed: a lost KeyUpdate is no lost
			// application data (see content).
			h.seq++
			h.pendLost += int64(it.length() - h.overhead())
			h.pendRecs++
			h.pendLen = it.length()
		case h.enc:
			h.seq++
			h.loseRecs(int64(it.length()-h.overhead()), 1, ReasonGap)
		case c.tls13() && it.typ() == recordAppData:
			h.enc, h.lvl, h.seq = true, h.firstLevel(), 1
			h.uncertain++ // the first protected record: the level switch may be inside it
		case it.typ() == recordHandshake && c.ch == nil && h.dir == ClientToServer:
			c.fail("ClientHello lost")
		case it.typ() == recordHandshake && c.sh == nil && h.dir == ServerToClient:
			c.fail("ServerHello lost")
		}
		return
	}
	if !h.enc {
		switch it.typ() {
		case recordHandshake:
			h.stats.Records++
			h.handshake(it.body)
			return
		case recordCCS:
			h.stats.Records++
			if c.sh != nil && !c.tls13() {
				h.enc, h.lvl, h.seq = true, lvlApp, 0
			}
			return
		case recordAlert:
			h.stats.Records++
			return
		case recordAppData:
			if !c.tls13() {
				h.stats.RecordsUndecryptable++
				return
			}
			h.enc, h.lvl, h.seq = true, h.firstLevel(), 0
		}
	}
	if it.typ() == recordCCS && c.tls13() {
		return // middlebox compatibility
	}
	h.decrypt(it)
}

// opener returns the opener of a level/generation, deriving its key.
func (h *half) epoch(lvl, gen int) (opener, []byte) {
	c := h.c
	s := c.suite
	if !c.tls13() {
		cMAC, sMAC, cKey, sKey, cIV, sIV := keyBlock12(s, c.sec.Master, c.ch.Random, c.sh.Random)
		mac, key, iv := cMAC, cKey, cIV
		if h.dir == ServerToClient {
			mac, key, iv = sMAC, sKey, sIV
		}
		var o opener
		var err error
		if s.cipher == cipherAESCBC {
			o, err = newOpenerCBC(s, mac, key, c.sh.EncryptThenMAC)
		} else {
			o, err = newOpener12AEAD(s, key, iv)
		}
		if err != nil {
			return nil, nil
		}
		return o, nil
	}
	var secret []byte
	switch {
	case lvl == lvlEarly:
		secret = c.sec.ClientEarly
	case lvl == lvlHS && h.dir == ClientToServer:
		secret = c.sec.ClientHandshake
	case lvl == lvlHS:
		secret = c.sec.ServerHandshake
	case lvl == lvlApp:
		if gen == h.gen+1 && h.lvl == lvlApp && h.secret != nil {
			secret = nextTrafficSecret(s, h.secret)
			break
		}
		secret = c.sec.ClientTraffic0
		if h.dir == ServerToClient {
			secret = c.sec.ServerTraffic0
		}
		for i := 0; i < gen; i++ {
			secret = nextTrafficSecret(s, secret)
		}
	}
	if secret == nil {
		return nil, nil
	}
	o, err := newOpener13(s, secret)
	if err != nil {
		return nil, nil
	}
	return o, secret
}

func (h *half) setEpoch(lvl, gen int, o opener, secret []byte) {
	h.lvl, h.gen, h.op, h.secret = lvl, gen, o, secret
	h.seq = 0
	h.hsbuf = h.hsbuf[:0]
}

// next lists the epochs that may follow the current one (a key change
// whose announcing record was lost or not parsed).
func (h *half) next() [][2]int {
	if !h.c.tls13() {
		return nil
	}
	switch h.lvl {
	case lvlEarly:
		return [][2]int{{lvlHS, 0}, {lvlApp, 0}}
	case lvlHS:
		return [][2]int{{lvlApp, 0}, {lvlApp, 1}}
	}
	return [][2]int{{lvlApp, h.gen + 1}, {lvlApp, h.gen + 2}}
}

func (h *half) buf(n int) []byte {
	if cap(h.c.scratch) < n {
		h.c.scratch = make([]byte, n+256)
	}
	return h.c.scratch[:0]
}

// decrypt opens one protected record and handles its content.
func (h *half) decrypt(it *item) {
	if h.op == nil {
		o, s := h.epoch(h.lvl, h.gen)
		if o == nil {
			h.c.fail("no key for the record protection")
			h.process(it)
			return
		}
		h.op, h.secret = o, s
	}
	h.avgRec = 0.875*h.avgRec + 0.125*float64(len(it.body)+5)
	dst := h.buf(len(it.body))
	if !h.lossSeen && h.uncertain == 0 && h.lvl == lvlApp && !it.borrowed {
		// Application traffic, no loss in this direction: key changes are read from
		// the handshake messages, no other epoch will be tried, so the
		// record is decrypted in place (one pass less over its bytes).
		switch o := h.op.(type) {
		case *aead13:
			dst = it.body[:0]
		case *aead12:
			if o.explicit {
				dst = it.body[8:8]
			} else {
				dst = it.body[:0]
			}
		}
	}
	if h.uncertain > 0 {
		if h.search(it, int64(h.uncertain)*int64(len(it.body)+5)) {
			h.uncertain, h.blind = 0, false
			return
		}
		h.failRecord(it)
		return
	}
	if p, typ, err := h.op.open(dst, it.hdr[:], it.body, h.seq); err == nil {
		h.seq++
		h.content(p, typ)
		return
	}
	for _, e := range h.next() {
		o, s := h.epoch(e[0], e[1])
		if o == nil {
			continue
		}
		if p, typ, err := o.open(dst, it.hdr[:], it.body, 0); err == nil {
			if e[0] == lvlApp && e[1] == h.gen+1 && h.lvl == lvlApp && h.pendRecs == 1 && h.pendLen == keyUpdateRecord {
				// The one record lost was the KeyUpdate: no
				// application data was lost.
				h.pendLost, h.pendRecs = 0, 0
			}
			h.setEpoch(e[0], e[1], o, s)
			h.seq = 1
			h.content(p, typ)
			return
		}
	}
	h.failRecord(it)
}

// keyUpdateRecord is the body length of a TLS 1.3 record holding only a
// KeyUpdate: the 5-byte message, the content type and the 16-byte tag.
const keyUpdateRecord = 5 + 1 + 16

// flushLost reports the losses held back by a lost TLS 1.3 record.
func (h *half) flushLost() {
	if h.pendRecs > 0 {
		n, recs := h.pendLost, int64(h.pendRecs)
		h.pendLost, h.pendRecs = 0, 0
		h.loseRecs(n, recs, ReasonGap)
	}
}

func (h *half) failRecord(it *item) {
	h.flushLost()
	h.stats.RecordsUndecryptable++
	h.seq++
	h.loseRecs(int64(it.length()-h.overhead()), 1, ReasonUndecryptable)
}

// content handles a record's plaintext.
func (h *half) content(p []byte, typ byte) {
	h.flushLost()
	h.stats.Records++
	switch typ {
	case recordAppData:
		if h.lvl == lvlHS {
			return // not allowed; never passed on as application data
		}
		if h.lvl == lvlEarly && !h.c.earlyAccepted {
			return // 0-RTT data the server rejected: the application never got it
		}
		h.stats.PlaintextBytes += int64(len(p))
		h.c.sink.Plaintext(h.dir, p)
	case recordHandshake:
		h.handshake(p)
	case recordAlert:
		// Authenticated, so the peer sent it: close_notify (level
		// warning, description 0) ends the direction; a fatal alert ends
		// it as well (RFC 8446 6.2: the connection is closed at once).
		if len(p) >= 2 && (p[1] == alertCloseNotify || p[0] == alertFatal) {
			h.closeNotify = true
		}
	}
}

// Alert fields (RFC 8446 6).
const (
	alertFatal       = 2
	alertCloseNotify = 0
)

// handshake reassembles handshake messages (plaintext or decrypted) and
// acts on the ones that matter: hellos, Finished and KeyUpdate (key
// changes after this record), EncryptedExtensions (ALPN),
// EndOfEarlyData.
func (h *half) handshake(p []byte) {
	if len(h.hsbuf)+len(p) > maxHandshake {
		h.hsbuf = h.hsbuf[:0]
		return
	}
	h.hsbuf = append(h.hsbuf, p...)
	change := -1
	for len(h.hsbuf) >= 4 {
		n := int(h.hsbuf[1])<<16 | int(h.hsbuf[2])<<8 | int(h.hsbuf[3])
		if n > maxHandshake {
			h.hsbuf = h.hsbuf[:0]
			break
		}
		if len(h.hsbuf) < 4+n {
			break
		}
		typ, body := h.hsbuf[0], h.hsbuf[4:4+n]
		switch typ {
		case hsClientHello:
			if h.dir == ClientToServer && !h.enc {
				if ch, err := ParseClientHello(body); err == nil {
					h.c.gotClientHello(ch)
				} else {
					h.c.fail("malformed ClientHello")
				}
			}
		case hsServerHello:
			if h.dir == ServerToClient && !h.enc {
				if sh, err := ParseServerHello(body); err == nil {
					h.c.gotServerHello(sh)
				} else {
					h.c.fail("malformed ServerHello")
				}
			}
		case hsNewSessionTicket:
			if h.dir == ServerToClient && !h.c.tls13() && len(body) > 6 {
				r := &reader{b: body[4:]}
				if t := r.vec16(); !t.bad && len(t.b) > 0 {
					h.c.gotTicket(append([]byte(nil), t.b...))
				}
			}
		case hsEncryptedExtensions:
			if h.dir == ServerToClient && h.lvl == lvlHS {
				a, early := parseEE(body)
				if a != "" {
					h.c.info.ALPN = a
				}
				h.c.eeSeen, h.c.earlyAccepted = true, early
			}
		case hsEndOfEarlyData:
			if h.lvl == lvlEarly {
				change = lvlHS
			}
		case hsFinished:
			if h.c.tls13() && h.lvl == lvlHS {
				change = lvlApp
			}
		case hsKeyUpdate:
			if h.c.tls13() && h.lvl == lvlApp {
				change = lvlApp + 1
			}
		}
		h.hsbuf = h.hsbuf[4+n:]
	}
	if len(h.hsbuf) == 0 {
		h.hsbuf = nil
	} else {
		h.hsbuf = append([]byte(nil), h.hsbuf...)
	}
	switch change {
	case lvlHS:
		o, s := h.epoch(lvlHS, 0)
		h.setEpoch(lvlHS, 0, o, s)
	case lvlApp:
		o, s := h.epoch(lvlApp, 0)
		h.setEpoch(lvlApp, 0, o, s)
	case lvlApp + 1:
		g := h.gen + 1
		o, s := h.epoch(lvlApp, g)
		h.setEpoch(lvlApp, g, o, s)
	}
}

// parseEE reads the ALPN and early_data extensions of
// EncryptedExtensions.
func parseEE(body []byte) (alpn string, early bool) {
	r := &reader{b: body}
	exts := r.vec16()
	for len(exts.b) > 0 && !exts.bad {
		typ := exts.u16()
		e := exts.vec16()
		switch typ {
		case extALPN:
			l := e.vec16()
			if p := l.vec8(); !p.bad {
				alpn = string(p.b)
			}
		case extEarlyData:
			early = true
		}
	}
	return alpn, early
}
