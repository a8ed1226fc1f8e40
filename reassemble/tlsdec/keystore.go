package tlsdec

import (
	"bytes"
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
)

// Secrets are the logged secrets of one connection (one client random).
// A nil field was not logged (yet).
type Secrets struct {
	Master          []byte // CLIENT_RANDOM (TLS 1.2)
	ClientHandshake []byte
	ServerHandshake []byte
	ClientTraffic0  []byte
	ServerTraffic0  []byte
	Exporter        []byte
	ClientEarly     []byte
}

func (s *Secrets) set(l Label, v []byte) {
	switch l {
	case LabelClientRandom:
		s.Master = v
	case LabelClientHandshake:
		s.ClientHandshake = v
	case LabelServerHandshake:
		s.ServerHandshake = v
	case LabelClientTraffic0:
		s.ClientTraffic0 = v
	case LabelServerTraffic0:
		s.ServerTraffic0 = v
	case LabelExporter:
		s.Exporter = v
	case LabelClientEarly:
		s.ClientEarly = v
	}
}

// KeyStore holds secrets by client random, for many connections, bounded
// in entries (the oldest is forgotten first) and in age. It is safe for
// concurrent use: one goroutine adds what the key stream brings, the
// shard workers look connections up.
type KeyStore struct {
	maxEntries int
	maxAge     time.Duration

	mu    sync.Mutex
	m     map[[32]byte]*storeEntry
	order [][32]byte // insertion order, for eviction (may hold stale randoms)
	gen   atomic.Uint64

	lines   atomic.Int64
	bad     atomic.Int64
	evicted atomic.Int64
}

type storeEntry struct {
	s     Secrets
	added time.Time
	gen   uint64 // store generation of its last change
}

// NewKeyStore returns a store of at most maxEntries client randoms, each
// kept maxAge after it was first added (0: no age limit).
func NewKeyStore(maxEntries int, maxAge time.Duration) *KeyStore {
	if maxEntries < 1 {
		maxEntries = 1
	}
	return &KeyStore{maxEntries: maxEntries, maxAge: maxAge, m: map[[32]byte]*storeEntry{}}
}

// Add stores one parsed line.
func (s *KeyStore) Add(k KeyLogLine, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	e := s.m[k.ClientRandom]
	if e == nil {
		for len(s.m) >= s.maxEntries && len(s.order) > 0 {
			s.dropOldestLocked()
		}
		e = &storeEntry{added: now}
		s.m[k.ClientRandom] = e
		s.order = append(s.order, k.ClientRandom)
	}
	e.s.set(k.Label, append([]byte(nil), k.Secret...))
	s.lines.Add(1)
	e.gen = s.gen.Add(1)
}

// AddLines parses and stores every line of b (key log lines, each ending
// in '\n'; a last line without one is taken too). It returns the number of
// secrets stored and of bad lines (counted, dropped).
func (s *KeyStore) AddLines(b []byte, now time.Time) (added, bad int) {
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		k, err := ParseKeyLogLine(line)
		switch err {
		case nil:
			s.Add(k, now)
			added++
		case ErrSkip:
		default:
			bad++
			s.bad.Add(1)
		}
	}
	return added, bad
}

// Get returns a copy of the secrets logged for a client random.
func (s *KeyStore) Get(cr [32]byte, now time.Time) (Secrets, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[cr]
	if e == nil {
		return Secrets{}, false
	}
	if s.maxAge > 0 && now.Sub(e.added) > s.maxAge {
		return Secrets{}, false
	}
	return e.s, true
}

// Generation changes whenever a secret is added: a connection waiting for
// its keys looks again only then.
func (s *KeyStore) Generation() uint64 { return s.gen.Load() }

// Len is the number of client randoms held.
func (s *KeyStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Counts returns the secrets stored, the bad lines dropped and the
// client randoms forgotten (age or entry limit) so far.
func (s *KeyStore) Counts() (lines, bad, evicted int64) {
	return s.lines.Load(), s.bad.Load(), s.evicted.Load()
}

func (s *KeyStore) expireLocked(now time.Time) {
	if s.maxAge <= 0 {
		return
	}
	for len(s.order) > 0 {
		e := s.m[s.order[0]]
		if e != nil && now.Sub(e.added) <= s.maxAge {
			return
		}
		s.dropOldestLocked()
	}
}

func (s *KeyStore) dropOldestLocked() {
	cr := s.order[0]
	s.order = s.order[1:]
	if _, ok := s.m[cr]; ok {
		delete(s.m, cr)
		s.evicted.Add(1)
	}
	if cap(s.order) > 2*s.maxEntries && len(s.order) < cap(s.order)/4 {
		s.order = append([][32]byte(nil), s.order...)
	}
}

// sessionKey is the store key of a TLS 1.2 session id or ticket: a hash
// in its own domain, never equal to a client random.
func sessionKey(id []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("tapline tls12 session\x00"))
	h.Write(id)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// AddSession remembers the master secret of a TLS 1.2 session under its
// session id or ticket: a resumption reuses it, and key loggers (Go's)
// do not always log it again for the resuming connection.
func (s *KeyStore) AddSession(id, master []byte, now time.Time) {
	if len(id) == 0 || len(master) != 48 {
		return
	}
	s.Add(KeyLogLine{Label: LabelClientRandom, ClientRandom: sessionKey(id), Secret: master}, now)
}

// Session returns the master secret remembered for a session id or
// ticket.
func (s *KeyStore) Session(id []byte, now time.Time) ([]byte, bool) {
	if len(id) == 0 {
		return nil, false
	}
	e, ok := s.Get(sessionKey(id), now)
	if !ok || e.Master == nil {
		return nil, false
	}
	return e.Master, true
}

// Candidate is one stored client random with its secrets.
type Candidate struct {
	ClientRandom [32]byte
	Secrets      Secrets
}

// Recent returns up to max client randoms added within window before now
// and changed after store generation since, newest first: the candidates
// for a connection whose ClientHello was not seen (its secrets are found
// by trying them on its first protected record; a later search tries only
// what changed since).
func (s *KeyStore) Recent(now time.Time, window time.Duration, max int, since uint64) []Candidate {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Candidate
	seen := map[[32]byte]bool{}
	for i := len(s.order) - 1; i >= 0 && len(out) < max; i-- {
		cr := s.order[i]
		e := s.m[cr]
		if e == nil || seen[cr] || e.gen <= since {
			continue
		}
		if now.Sub(e.added) > window {
			break
		}
		seen[cr] = true
		out = append(out, Candidate{cr, e.s})
	}
	return out
}
