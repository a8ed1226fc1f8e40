package tcp

import (
	"bytes"
	"testing"

	"github.com/tapline/tapline/proto"
)

// TestCausalWithReorderAndDuplicates: a request/response exchange with
// correct acknowledgement numbers, every 5th packet delivered after the
// next one and every 7th twice: both streams whole, delivered causally,
// nothing left held.
func TestCausalWithReorderAndDuplicates(t *testing.T) {
	h := newHarness(t, Config{})
	type p struct {
		client bool
		seq    uint32
		ack    uint32
		flags  string
		data   []byte
	}
	var pkts []p
	cseq, sseq := uint32(1000), uint32(9000)
	pkts = append(pkts, p{true, cseq - 1, 0, "S", nil}, p{false, sseq - 1, cseq, "SA", nil})
	var c2s, s2c []byte
	for i := 0; i < 40; i++ {
		req := pattern(200+i*37, byte(i))
		for off := 0; off < len(req); off += 1000 {
			seg := req[off:min(off+1000, len(req))]
			pkts = append(pkts, p{true, cseq, sseq, "PA", seg})
			cseq += uint32(len(seg))
		}
		c2s = append(c2s, req...)
		resp := pattern(3000+i*101, byte(i+1))
		for off := 0; off < len(resp); off += 1400 {
			seg := resp[off:min(off+1400, len(resp))]
			pkts = append(pkts, p{false, sseq, cseq, "PA", seg})
			sseq += uint32(len(seg))
		}
		s2c = append(s2c, resp...)
	}
	pkts = append(pkts, p{true, cseq, sseq, "FA", nil}, p{false, sseq, cseq + 1, "FA", nil})
	var late *p
	for i := range pkts {
		q := pkts[i]
		if (i+1)%5 == 0 && late == nil {
			late = &pkts[i]
			continue
		}
		h.feed(pktA(t, q.client, q.seq, q.ack, q.flags, q.data))
		if (i+1)%7 == 0 {
			h.feed(pktA(t, q.client, q.seq, q.ack, q.flags, q.data))
		}
		if late != nil && late != &pkts[i] {
			h.feed(pktA(t, late.client, late.seq, late.ack, late.flags, late.data))
			late = nil
		}
	}
	if late != nil {
		h.feed(pktA(t, late.client, late.seq, late.ack, late.flags, late.data))
	}
	r := h.recs[0]
	if !bytes.Equal(r.data[proto.ClientToServer].Bytes(), c2s) || !bytes.Equal(r.data[proto.ServerToClient].Bytes(), s2c) {
		t.Fatalf("streams: %d/%d B, want %d/%d", r.data[proto.ClientToServer].Len(), r.data[proto.ServerToClient].Len(), len(c2s), len(s2c))
	}
	if r.closed != CloseFIN || h.tr.Buffered() != 0 || len(r.order) != 80 {
		t.Fatalf("closed %q buffered %d, %d direction changes", r.closed, h.tr.Buffered(), len(r.order))
	}
}
