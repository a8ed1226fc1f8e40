package archive

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
)

// synthFrame builds an Ethernet/IPv4/TCP frame of flow f (0..flows-1)
// carrying payload.
func synthFrame(f int, payload []byte) []byte {
	b := make([]byte, 14+20+20+len(payload))
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+20+len(payload)))
	ip[8] = 64
	ip[9] = flow.ProtoTCP
	copy(ip[12:16], []byte{10, 0, byte(f >> 8), byte(f)})
	copy(ip[16:20], []byte{10, 1, 0, 1})
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:2], uint16(40000+f))
	binary.BigEndian.PutUint16(tcp[2:4], 443)
	tcp[12] = 5 << 4
	tcp[13] = 0x18
	copy(tcp[20:], payload)
	return b
}

// jsonPayload is WebSocket/JSON-like text: a market-data style message
// with the counter i, size about n bytes.
func jsonPayload(i, n int) []byte {
	s := fmt.Sprintf(`{"type":"ticker","seq":%d,"product_id":"BTC-USD","price":"%d.%02d","best_bid":"%d.00","best_ask":"%d.50","side":"buy","time":"2026-11-25T16:%02d:%02d.%06dZ","trade_id":%d,"last_size":"0.00%d"}`,
		i, 37000+i%997, i%100, 37000+i%991, 37000+i%991, (i/60)%60, i%60, i%1000000, 900000000+i, i%9)
	for len(s) < n {
		s += s[:min(len(s), n-len(s))]
	}
	return []byte(s[:n])
}

// synth makes n frames of VNI vni, one every step ns from t0, over flows
// flows, published on shards of shards (by the flow hash, as decap does).
func synth(n int, t0, step int64, vni uint32, flows, shards, size int) []pub {
	out := make([]pub, n)
	for i := range out {
		data := synthFrame(i%flows, jsonPayload(i, size))
		k, _ := flow.Parse(flow.LinkEthernet, data)
		out[i] = pub{framebatch.Frame{
			TimeNs: t0 + int64(i)*step, VNI: vni, Encap: framebatch.EncapVXLAN, Link: flow.LinkEthernet,
			OuterSrc: netip.MustParseAddr("172.31.0.238"), OrigLen: len(data), Data: data,
		}, flow.Shard(k.Hash(), shards)}
	}
	return out
}
