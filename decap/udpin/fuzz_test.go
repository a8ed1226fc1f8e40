package udpin

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// cmsg builds one SOL_SOCKET control message.
func cmsg(typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafePointer(&b[0]))
	h.Level = unix.SOL_SOCKET
	h.Type = typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestParseOOB(t *testing.T) {
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts, 1700000000)
	binary.NativeEndian.PutUint64(ts[8:], 123)
	ov := make([]byte, 4)
	binary.NativeEndian.PutUint32(ov, 42)
	b := append(cmsg(unix.SCM_TIMESTAMPNS, ts), cmsg(unix.SO_RXQ_OVFL, ov)...)
	gotTs, gotOv, ok := parseOOB(b)
	if !ok || gotTs != 1700000000*1e9+123 || gotOv != 42 {
		t.Fatalf("parseOOB = %d, %d, %v", gotTs, gotOv, ok)
	}
	if _, _, ok := parseOOB(nil); ok {
		t.Fatal("empty control data parsed")
	}
}

func FuzzParseOOB(f *testing.F) {
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts, 1700000000)
	f.Add(cmsg(unix.SCM_TIMESTAMPNS, ts))
	f.Add(append(cmsg(unix.SO_RXQ_OVFL, []byte{1, 0, 0, 0}), cmsg(unix.SCM_TIMESTAMPNS, ts)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0, 35, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Control data is aligned in the reader's buffer; do the same.
		buf := make([]uint64, (len(b)+7)/8)
		al := unsafeBytes(buf, len(b))
		copy(al, b)
		parseOOB(al)
	})
}

func TestParseProcFiles(t *testing.T) {
	table := "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		"  123: 0100007F:12B5 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 987654 2 0000000000000000 17\n" +
		"garbage line\n"
	var inode, queued, drops uint64
	parseUDPTable([]byte(table), func(i, q, d uint64) { inode, queued, drops = i, q, d })
	if inode != 987654 || queued != 0xa00 || drops != 17 {
		t.Fatalf("got inode %d queued %d drops %d", inode, queued, drops)
	}
	snmp := parseCounters([]byte("Ip: Forwarding\nIp: 1\nUdp: InDatagrams InErrors RcvbufErrors\nUdp: 5 3 2\n"), "Udp:")
	if snmp["InErrors"] != 3 || snmp["RcvbufErrors"] != 2 {
		t.Fatalf("snmp %v", snmp)
	}
	snmp6 := parseCounters([]byte("Udp6InErrors                    	4\nUdp6RcvbufErrors 9\n"), "")
	if snmp6["Udp6InErrors"] != 4 || snmp6["Udp6RcvbufErrors"] != 9 {
		t.Fatalf("snmp6 %v", snmp6)
	}
}

func FuzzParseProc(f *testing.F) {
	f.Add([]byte("h\n  1: 0100007F:12B5 00000000:0000 07 00000000:00000A00 00:00000000 00000000 0 0 9 2 0 17\n"))
	f.Add([]byte("Udp: A B\nUdp: 1 2\n"))
	f.Add([]byte("Udp6InErrors 4\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseUDPTable(b, func(_, _, _ uint64) {})
		parseCounters(b, "Udp:")
		parseCounters(b, "")
	})
}
