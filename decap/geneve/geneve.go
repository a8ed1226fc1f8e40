// Package geneve decodes and encodes the GENEVE header (RFC 8926), including
// the options AWS Gateway Load Balancer adds (option class 0x0108).
//
// Options are skipped by their length; only AWS's are read. Parse never
// allocates.
package geneve

import (
	"encoding/binary"
	"errors"
)

// HeaderLen is the length of the fixed GENEVE header, before options.
const HeaderLen = 8

// Port is the IANA UDP port of GENEVE.
const Port = 6081

// Protocol types (EtherTypes) of the encapsulated payload.
const (
	ProtoEthernet = 0x6558 // Transparent Ethernet Bridging: an Ethernet frame
	ProtoIPv4     = 0x0800 // an IPv4 packet, no Ethernet header (AWS GWLB)
	ProtoIPv6     = 0x86DD // an IPv6 packet, no Ethernet header
)

// AWS Gateway Load Balancer option class and types.
const (
	ClassAWS          = 0x0108
	AWSTypeENI        = 1 // 8 bytes: the GWLB endpoint ENI id
	AWSTypeAttachment = 2 // 8 bytes: the attachment id
	AWSTypeFlowCookie = 3 // 4 bytes: the flow cookie
)

// Errors returned by Parse.
var (
	ErrShort   = errors.New("geneve: shorter than its header and options")
	ErrVersion = errors.New("geneve: version is not 0")
	ErrOption  = errors.New("geneve: option runs past the options length")
)

// Header is a decoded GENEVE header.
type Header struct {
	// OptLen is the length of the options in bytes.
	OptLen int
	// OAM and Critical are the O and C flags.
	OAM, Critical bool
	// Protocol is the EtherType of the payload (ProtoEthernet, ProtoIPv4,
	// ProtoIPv6, ...).
	Protocol uint16
	// VNI is the 24-bit virtual network identifier.
	VNI uint32
	// Reserved is true when a reserved bit of the fixed header is set.
	Reserved bool
	// Options is the number of options.
	Options int
	// AWS is true when an option of class 0x0108 (AWS GWLB) is present;
	// the AWS fields below are then filled from it.
	AWS           bool
	AWSENI        uint64
	AWSAttachment uint64
	AWSFlowCookie uint32
}

// Parse decodes the GENEVE header and options at the start of b and returns
// the header and the payload, which aliases b.
func Parse(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, nil, ErrShort
	}
	if b[0]>>6 != 0 {
		return h, nil, ErrVersion
	}
	h.OptLen = int(b[0]&0x3f) * 4
	h.OAM = b[1]&0x80 != 0
	h.Critical = b[1]&0x40 != 0
	h.Reserved = b[1]&0x3f != 0 || b[7] != 0
	h.Protocol = binary.BigEndian.Uint16(b[2:4])
	h.VNI = uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6])
	end := HeaderLen + h.OptLen
	if len(b) < end {
		return h, nil, ErrShort
	}
	opts := b[HeaderLen:end]
	for len(opts) > 0 {
		if len(opts) < 4 {
			return h, nil, ErrOption
		}
		class := binary.BigEndian.Uint16(opts[0:2])
		typ := opts[2] &^ 0x80 // the high bit is the critical bit
		n := 4 + int(opts[3]&0x1f)*4
		if n > len(opts) {
			return h, nil, ErrOption
		}
		data := opts[4:n]
		h.Options++
		if class == ClassAWS {
			h.AWS = true
			switch {
			case typ == AWSTypeENI && len(data) >= 8:
				h.AWSENI = binary.BigEndian.Uint64(data)
			case typ == AWSTypeAttachment && len(data) >= 8:
				h.AWSAttachment = binary.BigEndian.Uint64(data)
			case typ == AWSTypeFlowCookie && len(data) >= 4:
				h.AWSFlowCookie = binary.BigEndian.Uint32(data)
			}
		}
		opts = opts[n:]
	}
	return h, b[end:], nil
}

// Option is one GENEVE option to encode. len(Data) must be a multiple of 4
// and at most 124.
type Option struct {
	Class uint16
	Type  uint8
	Data  []byte
}

// Append appends a GENEVE header with the given protocol type, VNI and
// options to dst.
func Append(dst []byte, protocol uint16, vni uint32, opts ...Option) []byte {
	optLen := 0
	for _, o := range opts {
		optLen += 4 + len(o.Data)
	}
	dst = append(dst, byte(optLen/4)&0x3f, 0)
	dst = binary.BigEndian.AppendUint16(dst, protocol)
	dst = binary.BigEndian.AppendUint32(dst, vni<<8)
	for _, o := range opts {
		dst = binary.BigEndian.AppendUint16(dst, o.Class)
		dst = append(dst, o.Type, byte(len(o.Data)/4)&0x1f)
		dst = append(dst, o.Data...)
	}
	return dst
}

// AWSOptions returns the options AWS Gateway Load Balancer adds: the
// endpoint ENI id, the attachment id and the flow cookie.
func AWSOptions(eni, attachment uint64, cookie uint32) []Option {
	return []Option{
		{Class: ClassAWS, Type: AWSTypeENI, Data: binary.BigEndian.AppendUint64(nil, eni)},
		{Class: ClassAWS, Type: AWSTypeAttachment, Data: binary.BigEndian.AppendUint64(nil, attachment)},
		{Class: ClassAWS, Type: AWSTypeFlowCookie, Data: binary.BigEndian.AppendUint32(nil, cookie)},
	}
}
