package decap

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/mirrorlab"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// TestKernelLabEndToEnd is the kernel end-to-end test: a kernel
// VXLAN mirror (tc mirred on prod's interface, both directions) of at
// least 100 MB of TCP payload pushed at full speed ext->prod over several
// connections, decap in the target namespace publishing into an embedded
// JetStream server (in the root namespace, on 127.0.0.1). The frames in
// TAPLINE_FRAMES must be exactly the packets the mirror sent (tc/ip
// counters), carry every payload byte of every connection, keep both
// directions of a connection on one subject, and the target kernel must
// not have dropped any (UDP RcvbufErrors unchanged).
func TestKernelLabEndToEnd(t *testing.T) {
	runKernelLab(t, mirrorlab.Options{VNI: 5569041}, 4, 25_000_000) // 100 MB in all
}

// TestKernelLabJumbo: 9216-byte inner frames (a production link with a
// 9202-byte MTU), mirrored inbound only, are published whole.
func TestKernelLabJumbo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	s := runKernelLab(t, mirrorlab.Options{VNI: 7, ExtMTU: 9202, InboundOnly: true}, 1, 20_000_000)
	if s.maxFrame != 9216 {
		t.Errorf("largest frame in the stream %d bytes, want 9216", s.maxFrame)
	}
}

// runKernelLab pushes flows TCP connections of perFlow bytes each through
// a lab with decap in the target namespace and checks the stream against
// the kernel's counters.
func runKernelLab(t *testing.T, opts mirrorlab.Options, flows int, perFlow int64) *labStream {
	t.Helper()
	vni := opts.VNI
	lab := mirrorlab.New(t, opts)
	_, url := natstest.Run(t)

	// Only the UDP sockets live in the target namespace. The buffer is
	// larger than decap's default so that a test machine starving the
	// reader for the whole burst still cannot make the kernel drop.
	var in *udpin.Intake
	if err := mirrorlab.Do(lab.Target, func() (err error) {
		in, err = udpin.Open(udpin.Config{Addrs: []string{lab.TargetAddrPort().String()}, RcvBuf: 256 << 20}, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)

	cfg := DefaultConfig()
	cfg.Common.NATSURL = url
	cfg.Common.HTTPAddr = ""
	cfg.Intake = in
	cfg.VXLANPort, cfg.GENEVEPort = lab.DstPort, 0
	d, reg := stage.TestDeps("decap")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- Run(ctx, cfg, d) }()

	before := labCounters(t, lab)
	pushCtx, pushCancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer pushCancel()
	errc := make(chan error, flows)
	for i := 0; i < flows; i++ {
		go func() { errc <- lab.TCPTransfer(pushCtx, mirrorlab.ExtToProd, perFlow) }()
	}
	for i := 0; i < flows; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}

	// Every mirror packet sent must be received by the intake and
	// published (or, on failure, be visibly dropped: then the wait below
	// times out with the figures).
	var after mirrorlab.Counters
	var sent uint64
	deadline := time.Now().Add(3 * time.Minute)
	for {
		after = labCounters(t, lab)
		sent = after.Sent - before.Sent
		st := in.Stats()
		published := metric(t, reg, "tapline_decap_published_frames_total")
		if st.Datagrams >= sent && published >= float64(sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sent %d mirror packets; intake %+v; published %v frames; target UDP %+v",
				sent, st, published, after.TargetUDP)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("decap Run: %v", err)
	}

	// The kernel's own account of the mirror: what tc mirred copied, what
	// the VXLAN device and the mirror link sent, nothing lost on the way.
	mirred := after.MirredPackets - before.MirredPackets
	vxlanSent := after.VXLAN.TxPackets - before.VXLAN.TxPackets
	if mirred != sent || vxlanSent != sent || after.PathDrops != before.PathDrops {
		t.Fatalf("tc mirred copied %d frames, the VXLAN device sent %d, the mirror link %d (path drops %d); before %+v after %+v",
			mirred, vxlanSent, sent, after.PathDrops-before.PathDrops, before, after)
	}
	if drops := after.TargetUDP.RcvbufErrors - before.TargetUDP.RcvbufErrors; drops != 0 {
		t.Errorf("target kernel UDP RcvbufErrors grew by %d", drops)
	}
	if st := in.Stats(); st.KernelDrops != 0 || st.Truncated != 0 || st.Datagrams != sent {
		t.Errorf("intake %+v, want %d datagrams, no drops, no truncation", st, sent)
	}
	for _, m := range []string{"tapline_decap_publish_dropped_frames_total"} {
		if v := metric(t, reg, m); v != 0 {
			t.Errorf("%s = %v", m, v)
		}
	}

	s := readLabStream(t, url, vni)
	t.Logf("mirror sent %d packets (%d bytes on the mirror link); stream holds %d frames (%d bytes) in %d batches",
		sent, after.Target.RxBytes-before.Target.RxBytes, s.frames, s.bytes, s.batches)
	if s.frames != sent {
		t.Fatalf("stream holds %d frames, the mirror sent %d", s.frames, sent)
	}
	// Each mirror packet is [Ethernet(14)]+IPv4(20)+UDP(8)+VXLAN(8) around
	// the inner frame (a NAPI veth counts bytes after the Ethernet
	// header): the stream holds exactly the inner bytes.
	wire := after.Target.RxBytes - before.Target.RxBytes
	if s.bytes != wire-36*sent && s.bytes != wire-50*sent {
		t.Errorf("stream holds %d frame bytes, the mirror link carried %d bytes in %d packets", s.bytes, wire, sent)
	}
	if st := in.Stats(); s.bytes != st.Bytes-8*sent {
		t.Errorf("stream holds %d frame bytes, the intake received %d VXLAN bytes in %d datagrams", s.bytes, st.Bytes, sent)
	}
	if s.foreign != 0 {
		t.Errorf("%d frames not of the lab's connections, wrong VNI or outer source", s.foreign)
	}
	if len(s.conns) != flows {
		t.Fatalf("stream holds %d connections, want %d", len(s.conns), flows)
	}
	for k, c := range s.conns {
		if len(c.subjects) != 1 {
			t.Errorf("connection %v spread over subjects %v", k, c.subjects)
		}
		if got := c.contiguous(); int64(got) != perFlow {
			t.Errorf("connection %v: stream holds %d contiguous payload bytes ext->prod, want %d", k, got, perFlow)
		}
		if c.fromProd == 0 && !opts.InboundOnly {
			t.Errorf("connection %v: no prod->ext frame (egress mirror) in the stream", k)
		}
		if c.fromProd != 0 && opts.InboundOnly {
			t.Errorf("connection %v: %d prod->ext frames in an inbound-only mirror", k, c.fromProd)
		}
	}
	return s
}

func labCounters(t *testing.T, l *mirrorlab.Lab) mirrorlab.Counters {
	t.Helper()
	c, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// labConn is what the stream holds of one lab TCP connection.
type labConn struct {
	subjects map[string]bool
	isn      uint32
	synSeen  bool
	segs     [][2]uint32 // ext->prod payload: [start, end) relative to isn+1
	fromProd int
}

// contiguous is how many payload bytes from the first one on the stream
// holds without a hole.
func (c *labConn) contiguous() uint32 {
	sort.Slice(c.segs, func(i, j int) bool { return c.segs[i][0] < c.segs[j][0] })
	var end uint32
	for _, s := range c.segs {
		if s[0] > end {
			break
		}
		end = max(end, s[1])
	}
	return end
}

type labStream struct {
	batches, frames, bytes, foreign uint64
	maxFrame                        int
	conns                           map[uint16]*labConn // by the ext side's port
}

// readLabStream reads every batch of TAPLINE_FRAMES and indexes the lab's
// TCP connections.
func readLabStream(t *testing.T, url string, vni uint32) *labStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, proto.FramesStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &labStream{conns: map[uint16]*labConn{}}
	var pending []labFrame
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get batch %d: %v", seq, err)
		}
		s.batches++
		r := framebatch.NewReader(m.Data)
		for {
			var f framebatch.Frame
			if err := r.Next(&f); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("batch %d: %v", seq, err)
			}
			s.frames++
			s.bytes += uint64(len(f.Data))
			s.maxFrame = max(s.maxFrame, len(f.Data))
			if f.VNI != vni || f.Encap != framebatch.EncapVXLAN || f.OuterSrc != mirrorlab.MirrorSrc || f.OrigLen != len(f.Data) {
				s.foreign++
				continue
			}
			lf, ok := parseLabFrame(f.Data)
			if !ok {
				s.foreign++
				continue
			}
			lf.subject = m.Subject
			pending = append(pending, lf)
		}
	}
	// SYNs first: payload offsets are relative to each connection's ISN.
	for _, f := range pending {
		if f.fromExt && f.syn {
			c := s.conn(f.extPort)
			c.isn, c.synSeen = f.seq, true
		}
	}
	for _, f := range pending {
		c := s.conn(f.extPort)
		c.subjects[f.subject] = true
		if !f.fromExt {
			c.fromProd++
			continue
		}
		if f.payload > 0 && c.synSeen {
			start := f.seq - c.isn - 1
			c.segs = append(c.segs, [2]uint32{start, start + uint32(f.payload)})
		}
	}
	return s
}

func (s *labStream) conn(port uint16) *labConn {
	c := s.conns[port]
	if c == nil {
		c = &labConn{subjects: map[string]bool{}}
		s.conns[port] = c
	}
	return c
}

// labFrame is the TCP view of one inner frame.
type labFrame struct {
	subject string
	fromExt bool
	extPort uint16
	syn     bool
	seq     uint32
	payload int
}

// parseLabFrame reads an Ethernet/IPv4/TCP frame between the lab's ext and
// prod addresses.
func parseLabFrame(b []byte) (labFrame, bool) {
	var f labFrame
	if len(b) < 14+20+20 || binary.BigEndian.Uint16(b[12:14]) != 0x0800 {
		return f, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || ip[9] != 6 || ihl < 20 || total > len(ip) || total < ihl+20 {
		return f, false
	}
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	tcp := ip[ihl:total]
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return f, false
	}
	switch {
	case src == mirrorlab.ExtAddr && dst == mirrorlab.ProdAddr:
		f.fromExt, f.extPort = true, binary.BigEndian.Uint16(tcp[0:2])
	case src == mirrorlab.ProdAddr && dst == mirrorlab.ExtAddr:
		f.extPort = binary.BigEndian.Uint16(tcp[2:4])
	default:
		return f, false
	}
	f.seq = binary.BigEndian.Uint32(tcp[4:8])
	f.syn = tcp[13]&0x02 != 0
	f.payload = len(tcp) - doff
	return f, true
}
