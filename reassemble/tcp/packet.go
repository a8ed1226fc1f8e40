package tcp

import (
	"encoding/binary"
	"errors"

	"github.com/tapline/tapline/proto/flow"
)

// TCP header flags.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagACK = 0x10
)

// Errors of parseSegment. They are counted, never fatal.
var (
	errNotTCP   = errors.New("tcp: not a TCP packet")
	errFragment = errors.New("tcp: IP fragment")
	errShortTCP = errors.New("tcp: truncated TCP header")
)

// segment is one parsed TCP packet: the part of the frame the tracker needs.
// Data aliases the frame.
type segment struct {
	seq   uint32
	ack   uint32
	flags uint8
	// wscale is the window scale option of a SYN (-1: none, or not a SYN).
	wscale int8
	data   []byte // captured payload
	lost   int    // payload bytes the IP header implies but the capture lacks (truncation)
}

// parseSegment reads the TCP header and payload of a frame whose flow is k.
// The payload ends where the IP header says the packet ends, so Ethernet
// padding is not taken for data; when the capture is shorter (the mirror
// truncated the packet) the missing tail is reported in lost.
func parseSegment(k *flow.Key, frame []byte) (segment, error) {
	var s segment
	if k.Proto != flow.ProtoTCP {
		return s, errNotTCP
	}
	if k.Fragment {
		return s, errFragment
	}
	off := k.L4Offset
	if off <= 0 || len(frame) < off+20 {
		return s, errShortTCP
	}
	h := frame[off:]
	doff := int(h[12]>>4) * 4
	if doff < 20 || len(h) < doff {
		return s, errShortTCP
	}
	s.seq = binary.BigEndian.Uint32(h[4:8])
	s.ack = binary.BigEndian.Uint32(h[8:12])
	s.flags = h[13]
	s.wscale = -1
	if s.flags&flagSYN != 0 {
		s.wscale = windowScale(h[20:doff])
	}
	ipEnd := k.L3Offset + k.IPTotalLen
	if k.Proto == flow.ProtoTCP && k.IPTotalLen == 40 && isIPv6Jumbo(frame, k) {
		ipEnd = len(frame)
	}
	want := ipEnd - (off + doff) // payload length according to IP
	if want < 0 {
		want = 0
	}
	have := len(frame) - (off + doff)
	if have > want {
		have = want
	}
	s.data = h[doff : doff+have]
	s.lost = want - have
	return s, nil
}

// isIPv6Jumbo reports an IPv6 packet with payload length 0 (a jumbogram or
// a capture of a TSO/GRO super-packet): its length is the captured length.
func isIPv6Jumbo(frame []byte, k *flow.Key) bool {
	return k.L3Offset < len(frame) && frame[k.L3Offset]>>4 == 6
}

// windowScale returns the window scale option (RFC 7323) in TCP options
// opts, capped at 14; -1 when there is none.
func windowScale(opts []byte) int8 {
	for len(opts) > 0 {
		switch opts[0] {
		case 0: // end of options
			return -1
		case 1: // no-op
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || opts[1] < 2 || int(opts[1]) > len(opts) {
			return -1
		}
		if opts[0] == 3 && opts[1] == 3 {
			return int8(min(opts[2], 14))
		}
		opts = opts[opts[1]:]
	}
	return -1
}
