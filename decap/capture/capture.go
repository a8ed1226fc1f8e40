// Package capture reads outer frames from pcap and pcapng files (either
// detected by its magic number), keeping capture timestamps in nanoseconds
// and each packet's link type (pcapng files may mix link types). It wraps
// gopacket's pcapgo readers and reuses one buffer: a frame is valid until
// the next call to Next.
package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// ErrFormat wraps errors for input that is neither pcap nor pcapng or that
// is corrupt.
var ErrFormat = errors.New("capture: not a valid pcap or pcapng file")

// Reader reads packets from a pcap or pcapng stream.
type Reader struct {
	pcap *pcapgo.Reader
	ng   *pcapgo.NgReader
	link int
	n    int
}

// NewReader detects the format of r and reads its file header.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	rd := &Reader{}
	switch binary.LittleEndian.Uint32(magic) {
	case 0x0A0D0D0A:
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true, SkipUnknownVersion: true})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrFormat, err)
		}
		rd.ng = ng
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		p, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrFormat, err)
		}
		rd.pcap, rd.link = p, int(p.LinkType())
	default:
		return nil, fmt.Errorf("%w: unknown magic %x", ErrFormat, magic)
	}
	return rd, nil
}

// Packet is one captured packet. Data is valid until the next Next.
type Packet struct {
	Data     []byte
	LinkType int   // pcap LINKTYPE_ value
	TimeNs   int64 // capture time, ns since the Unix epoch
	OrigLen  int   // length on the wire as recorded by the capture
	// Iface is the pcapng interface name of the packet ("" for pcap).
	Iface string
}

// Next reads the next packet into p. It returns io.EOF at the end of the
// file; a truncated or corrupt file gives an error wrapping ErrFormat that
// says which packet.
func (r *Reader) Next(p *Packet) error {
	var data []byte
	var ci gopacket.CaptureInfo
	var err error
	if r.ng != nil {
		data, ci, err = r.ng.ZeroCopyReadPacketData()
	} else {
		data, ci, err = r.pcap.ZeroCopyReadPacketData()
	}
	if err != nil {
		if err == io.EOF {
			return io.EOF
		}
		return fmt.Errorf("%w: packet %d: %v", ErrFormat, r.n+1, err)
	}
	r.n++
	p.Data, p.TimeNs, p.OrigLen, p.LinkType = data, ci.Timestamp.UnixNano(), ci.Length, r.link
	p.Iface = ""
	if r.ng != nil {
		if len(ci.AncillaryData) > 0 {
			if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
				p.LinkType = int(lt)
			}
		}
		if ifc, err := r.ng.Interface(ci.InterfaceIndex); err == nil {
			p.Iface = ifc.Name
		}
	}
	return nil
}
