package tlsdec

import (
	"time"
)

// Record content types and handshake message types used.
const (
	recordCCS       = 20
	recordAlert     = 21
	recordHandshake = 22
	recordAppData   = 23

	hsClientHello         = 1
	hsServerHello         = 2
	hsNewSessionTicket    = 4
	hsEndOfEarlyData      = 5
	hsEncryptedExtensions = 8
	hsFinished            = 20
	hsKeyUpdate           = 24

	maxPlaintext  = 1 << 14
	maxCiphertext = 1<<14 + 2048 // TLS 1.2 allowance (TLS 1.3: 2^14 + 256)
	maxHandshake  = 256 << 10    // largest handshake message reassembled (certificate chains)
)

// Directions of a connection.
const (
	ClientToServer = 0
	ServerToClient = 1
)

// Reasons passed to Sink.Lost.
const (
	// ReasonGap: records touched by TCP loss (or skipped while finding the
	// next record boundary after it).
	ReasonGap = "gap"
	// ReasonUndecryptable: records whose keys never came (held longer
	// than Limits.HoldTime or past Limits.HoldBytes) or that failed
	// authentication.
	ReasonUndecryptable = "undecryptable"
)

// Sink receives a connection's application data, per direction, in
// order.
type Sink interface {
	// Plaintext is decrypted application data of dir; b is only valid
	// during the call.
	Plaintext(dir int, b []byte)
	// Lost reports n plaintext bytes of dir that will never come, at this
	// point of the stream. n is computed from the record lengths (exact
	// for AEAD records without padding; an estimate where the padding is
	// unknown).
	Lost(dir int, n int64, reason string)
}

// Limits bound what a Conn holds while its keys have not arrived.
type Limits struct {
	// HoldBytes is the ciphertext held per connection waiting for keys;
	// past it the oldest held records are given up as undecryptable.
	HoldBytes int64
	// HoldTime is how long a record waits for its keys before it is given
	// up as undecryptable.
	HoldTime time.Duration
}

// Default limits.
const (
	DefaultHoldBytes = 4 << 20
	DefaultHoldTime  = 30 * time.Second
)

// DirStats counts the records of one direction.
type DirStats struct {
	Records              int64 // records decrypted (or read in plaintext during the handshake)
	RecordsLost          int64 // records touched by a gap, or skipped finding the next boundary
	RecordsUndecryptable int64 // records that failed authentication or whose keys never came
	PlaintextBytes       int64 // application data bytes passed on
	LostBytes            int64 // application data bytes reported lost (Sink.Lost): the most there can have been (see LostBytesMin)
	// LostBytesMin is the fewest application data bytes there can have
	// been in what LostBytes reports: equal for AEAD records, less for
	// lost CBC records (padding unknown) and for ciphertext lost in an
	// unknown number of records.
	LostBytesMin int64
	Resyncs      int64 // times the record boundary was searched after a loss
}

// Info is what the hellos said about a connection. It holds no secret.
type Info struct {
	Version     uint16 // negotiated version (0 until the ServerHello)
	CipherSuite uint16
	ServerName  string   // SNI of the ClientHello
	ALPN        string   // negotiated protocol (TLS 1.2 ServerHello, TLS 1.3 EncryptedExtensions)
	OfferedALPN []string // the ClientHello's list
	Resumed     bool     // PSK (TLS 1.3) or session id / ticket (TLS 1.2) resumption
	HelloRetry  bool     // a HelloRetryRequest was sent
	EarlyData   bool     // 0-RTT data offered
	// ClientHelloMissing: the ClientHello was not seen (one direction
	// mirrored); the secrets were found by trying the stored ones.
	ClientHelloMissing bool
}

// Conn decrypts one TLS connection. It is not safe for concurrent use
// (the KeyStore it reads is).
type Conn struct {
	store *KeyStore
	lim   Limits
	sink  Sink

	h [2]*half

	ch       *ClientHello
	sh       *ServerHello // the final ServerHello (not a HelloRetryRequest)
	suite    *suite
	info     Info
	failed   string // why the connection cannot be decrypted at all (unsupported version or suite, hello lost)
	sec      Secrets
	haveKeys bool
	keyGen   uint64 // store generation when the keys were last looked for
	looked   bool

	ord           uint64   // arrival counter of queued items
	undecryptable bool     // some record was given up for lack of keys
	tickets       [][]byte // TLS 1.2 session tickets seen before the keys
	eeSeen        bool     // the server's EncryptedExtensions were read (TLS 1.3)
	searched      uint64   // store generation up to which secrets were tried (ClientHello missing)
	earlyAccepted bool     // ... and accepted 0-RTT data
	now           time.Time
	scratch       []byte
}

// NewConn returns the decryptor of one connection. Zero limits take the
// defaults.
func NewConn(store *KeyStore, lim Limits, sink Sink) *Conn {
	if lim.HoldBytes <= 0 {
		lim.HoldBytes = DefaultHoldBytes
	}
	if lim.HoldTime <= 0 {
		lim.HoldTime = DefaultHoldTime
	}
	c := &Conn{store: store, lim: lim, sink: sink}
	for d := range c.h {
		c.h[d] = &half{c: c, dir: d}
	}
	return c
}

// Data feeds in-order stream bytes of dir, received at now (wall time:
// it measures how long ciphertext waits for its keys).
func (c *Conn) Data(dir int, b []byte, now time.Time) {
	c.now = now
	c.h[dir&1].feed(b)
	c.run()
}

// Gap reports that n stream bytes of dir were lost at this point.
func (c *Conn) Gap(dir int, n int64, now time.Time) {
	if n <= 0 {
		return
	}
	c.now = now
	c.h[dir&1].gap(n)
	c.run()
}

// Poll retries what waits for keys (new secrets in the store) and gives up
// records held longer than Limits.HoldTime.
func (c *Conn) Poll(now time.Time) {
	c.now = now
	c.run()
}

// Close ends the connection: records still waiting for keys are given up
// as undecryptable, a record cut by the end is lost.
func (c *Conn) Close(now time.Time) {
	c.now = now
	c.run()
	for _, h := range c.h {
		h.close()
	}
}

// Info returns what the hellos said.
func (c *Conn) Info() Info {
	in := c.info
	in.Resumed = c.resumed()
	return in
}

// Stats returns the record counts of dir.
func (c *Conn) Stats(dir int) DirStats { return c.h[dir&1].stats }

// Undecryptable reports whether records were given up because their keys
// did not come (or the connection cannot be decrypted at all).
func (c *Conn) Undecryptable() bool { return c.undecryptable || c.failed != "" }

// Failed returns why the connection cannot be decrypted at all, or "".
func (c *Conn) Failed() string { return c.failed }

// Waiting reports whether ciphertext is held waiting for keys. Bytes held
// once the keys are found (a record boundary searched after a loss, the
// rest of a record) wait for more of the stream, not for keys: a
// connection whose stream has ended has nothing to wait for.
func (c *Conn) Waiting() bool {
	if c.haveKeys || c.failed != "" {
		return false
	}
	return c.h[0].held() > 0 || c.h[1].held() > 0
}

// Memory is the bytes the connection holds (held ciphertext, partial
// records and handshake messages, scratch).
func (c *Conn) Memory() int64 {
	n := int64(cap(c.scratch))
	for _, h := range c.h {
		n += h.memory()
	}
	return n
}

// CloseNotified reports whether dir sent a protected close_notify (or a
// fatal alert): it sends no more application data, whether or not its
// FIN is ever seen.
func (c *Conn) CloseNotified(dir int) bool { return c.h[dir&1].closeNotify }

// KeysFound reports whether the connection's secrets were found.
func (c *Conn) KeysFound() bool { return c.haveKeys }

// run processes what can be processed in both directions, in the order
// the records arrived over both (as the TCP layer ordered them: a request
// before its response), until neither makes progress (a ServerHello
// unblocks the client direction, keys unblock both).
func (c *Conn) run() {
	var stuck [2]bool
	for {
		o0, ok0 := c.h[0].head()
		o1, ok1 := c.h[1].head()
		ok0, ok1 = ok0 && !stuck[0], ok1 && !stuck[1]
		var h *half
		switch {
		case ok0 && (!ok1 || o0 < o1):
			h = c.h[0]
		case ok1:
			h = c.h[1]
		}
		if h == nil {
			break
		}
		if !h.step() {
			stuck[h.dir] = true // a resynchronisation waiting for more bytes
		}
	}
	for _, h := range c.h {
		h.enforceHold()
	}
}

// versionKnown reports whether the ServerHello fixed version and suite.
func (c *Conn) versionKnown() bool { return c.sh != nil || c.failed != "" }

func (c *Conn) tls13() bool { return c.sh != nil && c.sh.Version == VersionTLS13 }

// keys looks the connection's secrets up (again only when the store got
// new secrets) and reports whether every secret its version needs is
// there.
func (c *Conn) keys() bool {
	if c.haveKeys {
		return true
	}
	if c.sh == nil || c.failed != "" {
		return false
	}
	g := c.store.Generation()
	if c.looked && g == c.keyGen {
		return false
	}
	c.looked, c.keyGen = true, g
	if c.ch == nil && !c.findClientRandom() {
		return false
	}
	s, ok := c.store.Get(c.ch.Random, c.now)
	if !ok && c.tls13() {
		return false
	}
	if c.tls13() {
		if s.ClientHandshake == nil || s.ServerHandshake == nil || s.ClientTraffic0 == nil || s.ServerTraffic0 == nil {
			return false
		}
		n := c.suite.prf().Size()
		for _, v := range [][]byte{s.ClientHandshake, s.ServerHandshake, s.ClientTraffic0, s.ServerTraffic0} {
			if len(v) != n {
				c.fail("secret length does not match the cipher suite")
				return false
			}
		}
		c.sec, c.haveKeys = s, true
		return true
	}
	if s.Master == nil {
		// A resumption: the master secret of the session it resumes.
		if m, found := c.store.Session(c.ch.Ticket, c.now); found && c.resumed() {
			s.Master = m
		} else if m, found := c.store.Session(c.sh.SessionID, c.now); found && c.resumed() {
			s.Master = m
		} else {
			return false
		}
	}
	c.sec, c.haveKeys = s, true
	c.store.AddSession(c.sh.SessionID, s.Master, c.now)
	for _, t := range c.tickets {
		c.store.AddSession(t, s.Master, c.now)
	}
	c.tickets = nil
	return true
}

// gotTicket records a TLS 1.2 NewSessionTicket: a later connection may
// resume the session with it.
func (c *Conn) gotTicket(t []byte) {
	if c.haveKeys {
		c.store.AddSession(t, c.sec.Master, c.now)
	} else if len(c.tickets) < 4 {
		c.tickets = append(c.tickets, t)
	}
}

func (c *Conn) fail(why string) {
	if c.failed == "" {
		c.failed = why
	}
}

// gotClientHello records the (first) ClientHello.
func (c *Conn) gotClientHello(h *ClientHello) {
	if c.ch != nil && c.info.ClientHelloMissing && c.ch.Random == h.Random {
		// The secrets were found before the ClientHello came (the
		// directions arrived out of order): it completes the picture.
		c.info.ClientHelloMissing = false
		c.ch = nil
	}
	if c.ch != nil {
		return // the second ClientHello after a HelloRetryRequest: same random
	}
	c.ch = h
	c.looked = false // look the keys up by this random now
	c.info.ServerName = h.ServerName
	c.info.OfferedALPN = h.ALPN
	c.info.EarlyData = h.EarlyData
}

// gotServerHello records a ServerHello or HelloRetryRequest.
func (c *Conn) gotServerHello(h *ServerHello) {
	if h.HelloRetry {
		c.info.HelloRetry = true
		return
	}
	if c.sh != nil {
		return
	}
	c.sh = h
	c.info.Version = h.Version
	c.info.CipherSuite = h.CipherSuite
	if h.ALPN != "" {
		c.info.ALPN = h.ALPN
	}
	s := suites[h.CipherSuite]
	switch {
	case h.Version != VersionTLS12 && h.Version != VersionTLS13:
		c.fail("unsupported version " + VersionName(h.Version))
	case s == nil:
		c.fail("unsupported cipher suite " + SuiteName(h.CipherSuite))
	case s.tls13 != (h.Version == VersionTLS13):
		c.fail("cipher suite " + s.name + " with " + VersionName(h.Version))
	}
	c.suite = s
}

// resumed reports whether the session was resumed: the server accepted a
// PSK (TLS 1.3), or echoed the client's session id (TLS 1.2: a session id
// or a ticket the server took).
func (c *Conn) resumed() bool {
	if c.sh == nil || c.ch == nil {
		return false
	}
	if c.sh.Version == VersionTLS13 {
		return c.sh.PSK
	}
	return len(c.sh.SessionID) > 0 && string(c.sh.SessionID) == string(c.ch.SessionID)
}

// Bounds of the search for the secrets of a connection whose ClientHello
// was not seen (inbound-only mirroring of a production client).
const (
	searchWindow = 10 * time.Minute
	searchMax    = 4096
)

// findClientRandom finds, for a connection whose ClientHello was not
// seen, the stored secrets that authenticate the server's first
// protected record (TLS 1.3: under SERVER_HANDSHAKE_TRAFFIC_SECRET;
// TLS 1.2: the Finished after ChangeCipherSpec under the key block of
// the master secret with that client random). It needs that record
// queued.
func (c *Conn) findClientRandom() bool {
	h := c.h[ServerToClient]
	if len(h.queue) == 0 || h.queue[0].kind != itemRecord {
		return false
	}
	it := h.queue[0]
	if c.tls13() {
		if h.enc || it.typ() != recordAppData {
			return false
		}
	} else if !h.enc || h.seq != 0 {
		return false
	}
	dst := h.buf(len(it.body))
	since := c.searched
	c.searched = c.store.Generation()
	for _, cand := range c.store.Recent(c.now, searchWindow, searchMax, since) {
		var o opener
		var err error
		s := cand.Secrets
		if c.tls13() {
			if s.ServerHandshake == nil || len(s.ServerHandshake) != c.suite.prf().Size() {
				continue
			}
			o, err = newOpener13(c.suite, s.ServerHandshake)
		} else {
			if s.Master == nil {
				continue
			}
			_, sMAC, _, sKey, _, sIV := keyBlock12(c.suite, s.Master, cand.ClientRandom, c.sh.Random)
			if c.suite.cipher == cipherAESCBC {
				o, err = newOpenerCBC(c.suite, sMAC, sKey, c.sh.EncryptThenMAC)
			} else {
				o, err = newOpener12AEAD(c.suite, sKey, sIV)
			}
		}
		if err != nil {
			continue
		}
		if _, _, err := o.open(dst, it.hdr[:], it.body, 0); err == nil {
			c.ch = &ClientHello{Random: cand.ClientRandom}
			c.info.ClientHelloMissing = true
			return true
		}
	}
	return false
}
