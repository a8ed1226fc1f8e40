package message_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/captures"
	"github.com/tapline/tapline/reassemble/message"
)

const capturesDir = "../../testdata/captures"

// segment is one TCP payload of a capture, in capture order.
type segment struct {
	src, dst string
	seq      uint32
	syn      bool
	payload  []byte
	ts       int64
}

// readSegments reads the TCP segments of a pcap or pcapng file.
func readSegments(t testing.TB, path string) []segment {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var src gopacket.PacketDataSource
	var lt layers.LinkType
	if strings.HasSuffix(path, ".pcapng") {
		r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatal(err)
		}
		src, lt = r, r.LinkType()
	} else {
		r, err := pcapgo.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		src, lt = r, r.LinkType()
	}
	var segs []segment
	for {
		data, ci, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, lt, gopacket.Default)
		tl, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		nl := p.NetworkLayer()
		if tl == nil || nl == nil {
			continue
		}
		ns, nd := nl.NetworkFlow().Endpoints()
		segs = append(segs, segment{
			src: fmt.Sprintf("%s:%d", ns, tl.SrcPort), dst: fmt.Sprintf("%s:%d", nd, tl.DstPort),
			seq: tl.Seq, syn: tl.SYN && !tl.ACK, payload: tl.Payload, ts: ci.Timestamp.UnixNano(),
		})
	}
	return segs
}

// feed runs a tiny in-order TCP assembler over the segments of one
// connection (clean captures: duplicates are dropped, nothing is
// reordered) and drives a Decoder. It returns the collector.
func feed(t testing.TB, segs []segment, midStream bool) *collector {
	col := newCollector(t)
	var client, server string
	known := false
	for _, s := range segs {
		if s.syn {
			client, server, known = s.src, s.dst, true
			break
		}
	}
	if !known && len(segs) > 0 {
		client, server = segs[0].src, segs[0].dst
	}
	dec := message.New(message.Meta{Conn: "c1", VNI: 7, Client: client, Server: server, ClientKnown: known, MidStream: midStream}, col, message.Limits{})
	next := map[string]uint32{}
	started := map[string]bool{}
	swapped := false
	for _, s := range segs {
		if s.syn || (s.payload == nil && !started[s.src]) {
			if s.syn || len(s.payload) == 0 {
				next[s.src] = s.seq
				if s.syn {
					next[s.src]++
				}
				started[s.src] = true
			}
			continue
		}
		if len(s.payload) == 0 {
			continue
		}
		if !started[s.src] {
			next[s.src] = s.seq
			started[s.src] = true
		}
		p := s.payload
		off := int32(next[s.src] - s.seq)
		if off < 0 {
			t.Fatalf("capture has a hole in %s at seq %d", s.src, next[s.src])
		}
		if int(off) >= len(p) {
			continue // retransmission
		}
		p = p[off:]
		next[s.src] += uint32(len(p))
		dir := proto.ClientToServer
		if (s.src == server) != swapped {
			dir = proto.ServerToClient
		}
		before := col.swaps
		dec.Data(dir, p, s.ts)
		if col.swaps != before {
			swapped = !swapped
		}
	}
	dec.Close(segs[len(segs)-1].ts)
	return col
}

// expMsg is one line of expected/<capture>.wsmsgs.txt.
type expMsg = captures.WSMsg

func readExpected(t *testing.T, path string) map[proto.Direction][]expMsg {
	t.Helper()
	w, err := captures.ReadWSMessages(path)
	if err != nil {
		t.Fatal(err)
	}
	return w.Msgs
}

func TestCaptures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(capturesDir, "ws-*.pcap*"))
	if len(files) == 0 {
		t.Fatal("no ws-* captures found")
	}
	sort.Strings(files)
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			want := readExpected(t, filepath.Join(capturesDir, "expected", name+".wsmsgs.txt"))
			col := feed(t, readSegments(t, path), false)
			if len(col.opens) != 1 || col.opens[0].Protocol != "websocket" {
				t.Fatalf("open events %+v", col.opens)
			}
			compareExpected(t, col, want)
		})
	}
}

func compareExpected(t *testing.T, col *collector, want map[proto.Direction][]expMsg) {
	t.Helper()
	for _, dir := range []proto.Direction{proto.ClientToServer, proto.ServerToClient} {
		got := col.dir(dir)
		exp := want[dir]
		if len(got) != len(exp) {
			for _, m := range got {
				t.Logf("%s seq %d %s len %d complete %v", dir, m.Seq, m.Opcode, len(m.Body), m.Complete)
			}
			t.Fatalf("%s: %d messages, want %d", dir, len(got), len(exp))
		}
		for i, e := range exp {
			m := got[i]
			if m.Opcode != e.Kind || len(m.Body) != e.Len {
				t.Errorf("%s #%d: %s len %d, want %s len %d", dir, i, m.Opcode, len(m.Body), e.Kind, e.Len)
				continue
			}
			if e.Sha1 != "" && m.sha1x8() != e.Sha1 {
				t.Errorf("%s #%d: sha1 %s, want %s", dir, i, m.sha1x8(), e.Sha1)
			}
			if e.Kind == "close" && m.CloseCode != e.Code {
				t.Errorf("%s #%d: close code %d, want %d", dir, i, m.CloseCode, e.Code)
			}
			if (e.Kind == "ping" || e.Kind == "pong") && string(m.Body) != e.Data {
				t.Errorf("%s #%d: %q, want %q", dir, i, m.Body, e.Data)
			}
		}
	}
}
