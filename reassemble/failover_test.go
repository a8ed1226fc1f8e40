package reassemble

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
)

// TestFailover runs two instances on one server. The first owns every
// shard; it is stopped in the middle of the connections; the second takes
// the shards over, rebuilds the open connections from the redelivered
// batches and finishes them. Every stream must arrive whole and exact,
// and every chunk must be stored once (re-published chunks are dropped by
// their Nats-Msg-Id).
func TestFailover(t *testing.T) { runFailover(t, false) }

// TestFailoverCrash: the owner dies without handing over. The server
// unpins it after the pinned TTL; its unacknowledged batches come back
// only after their ack wait, later than new ones: the new owner gathers
// batches until they are all redelivered and rebuilds the connections in
// stream order. Streams exact, every chunk stored once.
func TestFailoverCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	runFailover(t, true)
}

func runFailover(t *testing.T, crash bool) {
	const shards = 4
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)
	cfgA, cfgB := testConfig(url, shards, "instance-a"), testConfig(url, shards, "instance-b")
	cfgA.IdleTimeout, cfgB.IdleTimeout = time.Hour, time.Hour // a slow test machine must not close them
	cfgA.PinnedTTL, cfgB.PinnedTTL = time.Minute, time.Minute // nor unpin the owner: the hand-over unpins explicitly
	stopA := startEngine(t, cfgA)

	clock := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	// Connections covering every shard.
	var conns []*synthConn
	covered := map[int]bool{}
	for port := 40000; len(covered) < shards || len(conns) < 8; port++ {
		c := newSynthConn(t, fmt.Sprintf("10.1.0.1:%d", port), "10.1.0.2:9000", 42, &clock)
		f := c.frame(true, "S", nil)
		c.seq[0]-- // the probe frame is not part of the connection
		covered[shardOf(t, &f, shards)] = true
		conns = append(conns, c)
	}
	b := newBatcher(t, js, 3)
	send := func(c *synthConn, fromClient bool, flags string, payload []byte) {
		f := c.frame(fromClient, flags, payload)
		b.add(&f, shardOf(t, &f, shards))
	}
	const rounds = 30
	c2s := make([][]byte, len(conns))
	s2c := make([][]byte, len(conns))
	for i := range conns {
		c2s[i] = pattern(rounds*700, byte(2*i))
		s2c[i] = pattern(rounds*1300, byte(2*i+1))
	}
	round := func(r int) {
		for i, c := range conns {
			send(c, true, "PA", c2s[i][r*700:(r+1)*700])
			send(c, false, "PA", s2c[i][r*1300:(r+1)*1300])
		}
	}
	for i, c := range conns {
		send(c, true, "S", nil)
		send(c, false, "SA", nil)
		_ = i
	}
	round(0)
	b.flush()
	waitFor(t, "the first instance to own every shard", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.conns) == len(conns)
	})
	startEngine(t, cfgB)
	for r := 1; r < rounds/2; r++ {
		round(r)
	}
	b.flush()
	waitFor(t, "some of the second round", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return col.total > len(conns)*rounds/2
	})
	stopA() // hand-over in the middle of every connection
	for r := rounds / 2; r < rounds; r++ {
		round(r)
	}
	for _, c := range conns {
		send(c, true, "FA", nil)
		send(c, false, "FA", nil)
	}
	b.flush()
	waitFor(t, "every connection to close", func() bool { return len(col.closed()) >= len(conns) })

	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatal(col.errs)
	}
	byClient := map[string]*connOut{}
	for _, c := range col.conns {
		if c.closeEv != nil {
			t.Logf("%s: mid %v close %s c2s %+v s2c %+v", c.id, c.open != nil && c.open.MidStream, c.closeEv.Reason, c.closeEv.C2S, c.closeEv.S2C)
		}
		if byClient[c.client] != nil {
			t.Errorf("client %s has two connections (%s, %s)", c.client, c.id, byClient[c.client].id)
		}
		byClient[c.client] = c
	}
	for i, sc := range conns {
		c := byClient[sc.cli.String()]
		if c == nil {
			t.Fatalf("connection %s missing", sc.cli)
		}
		if !bytes.Equal(c.body[proto.ClientToServer], c2s[i]) || !bytes.Equal(c.body[proto.ServerToClient], s2c[i]) {
			t.Errorf("%s: streams differ: %d/%d B, want %d/%d", c.id, len(c.body[proto.ClientToServer]), len(c.body[proto.ServerToClient]), len(c2s[i]), len(s2c[i]))
		}
		for id, n := range c.chunks {
			if n != 1 {
				t.Errorf("chunk %s stored %d times", id, n)
			}
		}
		if c.closeEv == nil || c.closeEv.Reason != "fin" || c.incomplete != 0 || len(c.gaps) != 0 {
			t.Errorf("%s: close %+v, %d incomplete, %d gaps", c.id, c.closeEv, c.incomplete, len(c.gaps))
		}
	}
	_ = framebatch.Frame{}
}
