package main

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
)

// genSpec describes a generated capture: conns WebSocket connections, the
// first deflated of them with permessage-deflate (context takeover), each
// server sending messages of msgMin..msgMax bytes until the capture holds
// about totalBytes, in TCP segments of mss bytes interleaved over the
// connections.
type genSpec struct {
	conns, deflated  int
	totalBytes       int64
	msgMin, msgMax   int
	mss              int
	singleMessageLen int // > 0: one connection, one message of this size (memory case)
}

// genResult is what the capture holds.
type genResult struct {
	fileBytes int64
	conns     int
	messages  int   // data messages, all complete
	payload   int64 // inflated message bytes
}

// genConn is one connection being written.
type genConn struct {
	client, server   [4]byte
	cport, sport     uint16
	cseq, sseq       uint32
	fw               *flate.Writer
	fbuf             bytes.Buffer
	pending          []byte // server bytes not yet segmented
	sentMsgs, target int
}

// generate writes the capture described by s to path (pcap, Ethernet,
// nanosecond timestamps).
func generate(path string, s genSpec) (genResult, error) {
	f, err := os.Create(path)
	if err != nil {
		return genResult{}, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	res := genResult{conns: s.conns}
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b23c4d) // nanosecond pcap
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 262144)
	binary.LittleEndian.PutUint32(hdr[20:], 1)
	bw.Write(hdr)
	res.fileBytes = 24
	ts := int64(1_780_000_000_000_000_000)
	frame := make([]byte, 0, 2048)
	write := func(c *genConn, fromServer bool, flags byte, payload []byte) {
		frame = tcpFrame(frame[:0], c, fromServer, flags, payload)
		var ph [16]byte
		ts += 2_000
		binary.LittleEndian.PutUint32(ph[0:], uint32(ts/1e9))
		binary.LittleEndian.PutUint32(ph[4:], uint32(ts%1e9))
		binary.LittleEndian.PutUint32(ph[8:], uint32(len(frame)))
		binary.LittleEndian.PutUint32(ph[12:], uint32(len(frame)))
		bw.Write(ph[:])
		bw.Write(frame)
		res.fileBytes += int64(16 + len(frame))
		n := uint32(len(payload))
		if flags&(flagSYN|flagFIN) != 0 {
			n++
		}
		if fromServer {
			c.sseq += n
		} else {
			c.cseq += n
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	conns := make([]*genConn, s.conns)
	for i := range conns {
		c := &genConn{client: [4]byte{10, 1, 0, byte(1 + i)}, server: [4]byte{10, 2, 0, 1}, cport: uint16(40000 + i), sport: 80, cseq: 1000, sseq: 900000}
		conns[i] = c
		ext := ""
		if i < s.deflated {
			c.fw, _ = flate.NewWriter(&c.fbuf, flate.BestSpeed)
			ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
		}
		write(c, false, flagSYN, nil)
		write(c, true, flagSYN|flagACK, nil)
		write(c, false, flagACK, nil)
		write(c, false, flagPSH|flagACK, []byte("GET /feed HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+ext+"\r\n"))
		write(c, true, flagPSH|flagACK, []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"+ext+"\r\n"))
	}
	perConn := s.totalBytes / int64(s.conns)
	written := make([]int64, s.conns)
	msg := make([]byte, 0, max(s.msgMax, s.singleMessageLen))
	for open := s.conns; open > 0; {
		open = 0
		for i, c := range conns {
			if c == nil {
				continue
			}
			if len(c.pending) < s.mss && written[i] < perConn && (s.singleMessageLen == 0 || c.sentMsgs == 0) {
				n := s.singleMessageLen
				if n == 0 {
					n = s.msgMin + rng.IntN(s.msgMax-s.msgMin+1)
				}
				msg = jsonish(msg[:0], n, rng)
				c.pending = append(c.pending, wsMessage(c, msg)...)
				c.sentMsgs++
				res.messages++
				res.payload += int64(len(msg))
			}
			if len(c.pending) == 0 {
				write(c, true, flagFIN|flagACK, nil)
				write(c, false, flagFIN|flagACK, nil)
				conns[i] = nil
				continue
			}
			open++
			seg := c.pending[:min(s.mss, len(c.pending))]
			write(c, true, flagPSH|flagACK, seg)
			written[i] += int64(len(seg))
			c.pending = c.pending[len(seg):]
			if len(c.pending) == 0 {
				c.pending = nil
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return res, err
	}
	return res, f.Close()
}

// wsMessage frames msg as one unmasked server binary (text when deflated)
// WebSocket message, compressed with the connection's deflate context.
func wsMessage(c *genConn, msg []byte) []byte {
	op, body := byte(0x2), msg
	if c.fw != nil {
		op = 0x1 | 0x40 // text, RSV1
		c.fbuf.Reset()
		c.fw.Write(msg)
		c.fw.Flush()
		body = bytes.TrimSuffix(c.fbuf.Bytes(), []byte{0, 0, 0xff, 0xff})
	}
	out := make([]byte, 0, len(body)+10)
	out = append(out, 0x80|op)
	switch n := len(body); {
	case n < 126:
		out = append(out, byte(n))
	case n < 1<<16:
		out = append(out, 126, byte(n>>8), byte(n))
	default:
		out = append(out, 127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	return append(out, body...)
}

// jsonish appends n bytes of JSON-like market data: compressible like
// real feeds (about 4:1 with deflate), not a repeated pattern.
func jsonish(b []byte, n int, rng *rand.Rand) []byte {
	for len(b) < n {
		b = fmt.Appendf(b, `{"sym":"S%03d","px":%d.%02d,"qty":%d,"side":"%s","ts":%d},`, rng.IntN(500), rng.IntN(9000), rng.IntN(100), rng.IntN(100000), [2]string{"buy", "sell"}[rng.IntN(2)], rng.Int64N(1e12))
	}
	return b[:n]
}

const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagPSH = 0x08
	flagACK = 0x10
)

// tcpFrame appends an Ethernet/IPv4/TCP frame of c in one direction.
func tcpFrame(b []byte, c *genConn, fromServer bool, flags byte, payload []byte) []byte {
	src, dst, sp, dp, seq, ack := c.client, c.server, c.cport, c.sport, c.cseq, c.sseq
	if fromServer {
		src, dst, sp, dp, seq, ack = c.server, c.client, c.sport, c.cport, c.sseq, c.cseq
	}
	b = append(b, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00)
	ip := len(b)
	total := 20 + 20 + len(payload)
	b = append(b, 0x45, 0, byte(total>>8), byte(total), 0, 0, 0x40, 0, 64, 6, 0, 0)
	b = append(b, src[:]...)
	b = append(b, dst[:]...)
	var sum uint32
	for i := ip; i < ip+20; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[ip+10:], ^uint16(sum))
	b = binary.BigEndian.AppendUint16(b, sp)
	b = binary.BigEndian.AppendUint16(b, dp)
	b = binary.BigEndian.AppendUint32(b, seq)
	b = binary.BigEndian.AppendUint32(b, ack)
	b = append(b, 5<<4, flags, 0xff, 0xff, 0, 0, 0, 0)
	return append(b, payload...)
}
