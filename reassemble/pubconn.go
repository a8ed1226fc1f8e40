package reassemble

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/tapline/tapline/proto"
)

// A publish whose acknowledgement is lost (the server never stored it: a
// stream leader lost in an election) is sent again after its timeout,
// behind whatever was sent after it and stored meanwhile. A reader can
// put a message's chunks back in order (replay holds up to
// proto.ReorderChunks of them), not a message begun before the previous
// one ended nor an event ahead of the data it follows. So a connection's
// entries are sent in order under one rule: while any of its entries
// awaits an acknowledgement, only further chunks of the same message are
// sent, at most maxConn of them in flight; its next message or event is
// sent once everything before it on the connection is stored.

// connFlight is what one connection has in flight.
type connFlight struct {
	key  string   // message (dir/seq) of the chunks in flight; "" for an event
	ns   []uint64 // queue numbers of its entries sent since the oldest not known stored
	last uint64   // queue number of its latest entry
}

// errEarlierFailed is why an entry was held back: an earlier entry of its
// connection was not stored, so the queue is resent in order.
var errEarlierFailed = errors.New("an earlier entry of the connection was not stored")

// orderKeys sets the connection, message and continuation of an entry.
func orderKeys(it *pubItem, m *nats.Msg) {
	if m.Header == nil {
		return
	}
	it.conn = m.Header.Get(proto.HdrConn)
	if proto.Kind(m.Header.Get(proto.HdrKind)) == proto.KindData {
		it.key = m.Header.Get(proto.HdrDir) + "/" + m.Header.Get(proto.HdrSeq)
		it.cont = m.Header.Get(proto.HdrChunk) != "0"
	}
}

// dispatch sends queue entry i once the order rule allows it, waiting for
// earlier entries of its connection when needed. When one of those failed
// (or the retry context ended), entry i is left unsent for the resend.
func (p *publisher) dispatch(i int) {
	if err := p.gate(i); err != nil {
		p.q[i].fut, p.unsent = nil, true
		p.sendErr = err
		return
	}
	p.send(i)
}

// gate waits until queue entry i may be sent and records it as in flight.
func (p *publisher) gate(i int) error {
	it := &p.q[i]
	if it.conn == "" {
		return nil
	}
	if p.flight == nil {
		p.flight = map[string]*connFlight{}
	}
	cf := p.flight[it.conn]
	if cf == nil {
		cf = &connFlight{}
		p.flight[it.conn] = cf
	}
	// Only from the oldest: what was sent after an entry not stored yet
	// may land ahead of it, so it counts against the bound until then.
	for len(cf.ns) > 0 {
		if j := p.index(cf.ns[0]); j >= 0 && !p.storedNow(j) {
			break
		}
		cf.ns = cf.ns[1:]
	}
	if len(cf.ns) > 0 && it.cont && it.key == cf.key {
		for len(cf.ns) >= max(p.maxConn, 1) {
			if err := p.waitStored(cf.ns[0]); err != nil {
				return err
			}
			cf.ns = cf.ns[1:]
		}
	} else {
		for _, n := range cf.ns {
			if err := p.waitStored(n); err != nil {
				return err
			}
		}
		cf.ns = cf.ns[:0]
	}
	cf.key, cf.last = it.key, it.n
	cf.ns = append(cf.ns, it.n)
	return nil
}

// index is the queue position of queue number n, -1 once it was popped
// (stored).
func (p *publisher) index(n uint64) int {
	if len(p.q) == 0 || n < p.q[0].n {
		return -1
	}
	return int(n - p.q[0].n)
}

// storedNow reports, without waiting, whether queue entry j is stored.
func (p *publisher) storedNow(j int) bool {
	it := &p.q[j]
	if it.acked {
		return true
	}
	if it.fut == nil {
		return false
	}
	select {
	case <-it.fut.Ok():
		it.acked = true
		return true
	default:
		return false
	}
}

// waitStored waits for the acknowledgement of queue number n. A failure
// read here is kept as a nil future, and the queue marked for a resend.
func (p *publisher) waitStored(n uint64) error {
	j := p.index(n)
	if j < 0 {
		return nil
	}
	it := &p.q[j]
	if it.acked {
		return nil
	}
	if it.fut == nil {
		return errEarlierFailed
	}
	select {
	case <-it.fut.Ok():
		it.acked = true
		return nil
	case err := <-it.fut.Err():
		it.fut, p.unsent = nil, true
		return fmt.Errorf("%w: %w", errEarlierFailed, err)
	case <-p.retryCtx.Done():
		return p.retryCtx.Err()
	}
}

// forget drops a popped entry's connection once nothing newer of it is
// queued.
func (p *publisher) forget(it *pubItem) {
	if cf := p.flight[it.conn]; cf != nil && cf.last == it.n {
		delete(p.flight, it.conn)
	}
}

// resendAll sends every entry not yet stored again, in order and under
// the order rule; JetStream drops the copies already stored by their
// Nats-Msg-Id. When an entry fails meanwhile, the rest stay unsent for
// the next resend.
func (p *publisher) resendAll() {
	p.unsent, p.flight = false, nil
	for i := range p.q {
		if p.q[i].acked {
			continue
		}
		if p.unsent {
			p.q[i].fut = nil
			continue
		}
		p.dispatch(i)
	}
}
