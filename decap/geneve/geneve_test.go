package geneve

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// gcp is the GENEVE header and options of tcpdump's geneve-gcp.pcap: protocol
// 0x0800, VNI 0, three GCP options (class 0x0132), 40 bytes of options.
const gcp = "0a00080000000000013201018000" + "00d1013202040800000dc0a86402" + "000000000000000001320302000000000000123445"

func TestParseGCP(t *testing.T) {
	b, _ := hex.DecodeString(gcp)
	h, inner, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Protocol != ProtoIPv4 || h.OptLen != 40 || h.Options != 3 || h.AWS || len(inner) != 1 || inner[0] != 0x45 {
		t.Fatalf("got %+v inner %x", h, inner)
	}
}

func TestAWSRoundTrip(t *testing.T) {
	b := Append(nil, ProtoIPv4, 0x123456, AWSOptions(0xabcdef, 42, 7)...)
	b = append(b, 0x45)
	h, inner, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !h.AWS || h.AWSENI != 0xabcdef || h.AWSAttachment != 42 || h.AWSFlowCookie != 7 || h.VNI != 0x123456 || h.Options != 3 || !bytes.Equal(inner, []byte{0x45}) {
		t.Fatalf("got %+v", h)
	}
}

func TestErrors(t *testing.T) {
	if _, _, err := Parse([]byte{0, 0, 0x65}); !errors.Is(err, ErrShort) {
		t.Fatal(err)
	}
	if _, _, err := Parse([]byte{0x40, 0, 0x65, 0x58, 0, 0, 1, 0}); !errors.Is(err, ErrVersion) {
		t.Fatal(err)
	}
	if _, _, err := Parse([]byte{0x01, 0, 0x65, 0x58, 0, 0, 1, 0}); !errors.Is(err, ErrShort) {
		t.Fatal(err)
	}
	// Option length 8 bytes inside 4 bytes of options.
	if _, _, err := Parse([]byte{0x01, 0, 0x65, 0x58, 0, 0, 1, 0, 1, 8, 1, 1}); !errors.Is(err, ErrOption) {
		t.Fatal(err)
	}
}

func FuzzGENEVE(f *testing.F) {
	b, _ := hex.DecodeString(gcp)
	f.Add(b)
	f.Add(Append(nil, ProtoEthernet, 10, Option{Class: 0, Type: 0x80, Data: make([]byte, 4)}))
	f.Add(Append(nil, ProtoIPv4, 1, AWSOptions(1, 2, 3)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, inner, err := Parse(b)
		if err != nil {
			return
		}
		if len(inner) != len(b)-HeaderLen-h.OptLen || h.VNI > 0xffffff {
			t.Fatalf("inconsistent %+v len %d", h, len(inner))
		}
	})
}
