package archive

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/seekable"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/flow"
	"github.com/tapline/tapline/proto/framebatch"
	"github.com/tapline/tapline/proto/natstest"
)

// TestVerbatimBatches: batches that are plain pcapng sections are stored
// as they arrived (the chunk holds their bytes unchanged), a batch
// carrying a block the archive does not keep is written again without it,
// and either way the chunks decompress to pcapng that tshark reads and
// queries return exactly the frames published, over S3 (versitygw).
func TestVerbatimBatches(t *testing.T) {
	_, sc := s3Location(t)
	_, url := natstest.Run(t)
	_, js := connect(t, url)
	fs := readCapture(t, filepath.Join(capturesDir, "aws-vpc-mirror-vxlan-ssh.pcap"), 1)
	if len(fs) < 20 {
		t.Fatalf("capture holds %d frames", len(fs))
	}
	publish(t, js, nil, 1) // creates the streams

	// Batches of 5 frames as decap writes them, one of them with a custom
	// block (type 0xBAD) after its packets.
	var batches [][]byte
	var oddBatch int
	w := framebatch.Writer{App: "tapline decap"}
	for i := 0; i < len(fs); i += 5 {
		w.Reset()
		for j := i; j < min(i+5, len(fs)); j++ {
			w.Add(&fs[j].f)
		}
		b := append([]byte(nil), w.Bytes()...)
		if len(batches) == 2 {
			blk := []byte{0xad, 0x0b, 0, 0, 16, 0, 0, 0, 's', 'e', 'c', 'r', 16, 0, 0, 0}
			b = append(b, blk...)
			binary.LittleEndian.PutUint64(b[16:24], binary.LittleEndian.Uint64(b[16:24])+uint64(len(blk)))
			oddBatch = len(batches)
		}
		batches = append(batches, b)
	}
	ctx := context.Background()
	vni := fs[0].f.VNI
	for i, b := range batches {
		if _, err := js.Publish(ctx, proto.FramesSubject(vni, 0), b); err != nil {
			t.Fatalf("publish batch %d: %v", i, err)
		}
	}
	cfg := testConfig(url, sc.Location)
	cfg.Store = sc
	cfg.ChunkBytes = 1 << 20 // one chunk
	stop, _ := runArchive(t, cfg)
	waitAcked(t, js, cfg.Consumer)
	stop()

	st, err := store.Open(ctx, sc.Location, sc.S3)
	if err != nil {
		t.Fatal(err)
	}
	chunks, errs := query.List(ctx, st, query.Filter{})
	if len(errs) > 0 || len(chunks) == 0 {
		t.Fatalf("list: %d chunks, errors %v", len(chunks), errs)
	}
	dec, _ := seekable.NewDecoder()
	var raw []byte
	var packets int64
	for _, c := range chunks {
		obj, err := st.Get(ctx, c.Index.Chunk)
		if err != nil {
			t.Fatal(err)
		}
		r, err := dec.DecodeAll(obj)
		if err != nil {
			t.Fatalf("%s: %v", c.Index.Chunk, err)
		}
		if n := len(decodeAll(t, r)); int64(n) != c.Index.Packets {
			t.Fatalf("%s: %d packets, index says %d", c.Index.Chunk, n, c.Index.Packets)
		}
		tsharkCount(t, r, int(c.Index.Packets))
		zstdCLI(t, obj, r, int(c.Index.Packets))
		packets += c.Index.Packets
		raw = append(raw, r...)
	}
	if packets != int64(len(fs)) {
		t.Fatalf("chunks hold %d packets, published %d", packets, len(fs))
	}
	for i, b := range batches {
		in := bytes.Contains(raw, b)
		if i == oddBatch && in {
			t.Errorf("batch %d with a custom block was stored with it", i)
		}
		if i != oddBatch && !in {
			t.Errorf("batch %d is not in the chunk as it was published", i)
		}
	}
	if bytes.Contains(raw, []byte("secr")) {
		t.Error("the custom block's bytes are in the chunk")
	}

	out, res := queryStore(t, st, query.Filter{})
	if res.Duplicates != 0 {
		t.Errorf("%d duplicates", res.Duplicates)
	}
	sameFrames(t, decodeAll(t, out), frames(fs))
	tsharkCount(t, out, len(fs))

	// A time window and one flow: exactly the frames inside it.
	lo, hi := fs[3].f.TimeNs, fs[len(fs)-4].f.TimeNs
	k, err := flow.Parse(fs[2].f.Link, fs[2].f.Data) // the SSH connection (port 22)
	if err != nil {
		t.Fatal(err)
	}
	f := query.Filter{FromNs: lo, ToNs: hi, Ports: []uint16{k.DstPort}}
	var want []framebatch.Frame
	for _, p := range fs {
		if p.f.TimeNs < lo || p.f.TimeNs >= hi {
			continue
		}
		if pk, err := flow.Parse(p.f.Link, p.f.Data); err == nil && (pk.SrcPort == k.DstPort || pk.DstPort == k.DstPort) {
			want = append(want, p.f)
		}
	}
	if len(want) == 0 {
		t.Fatal("the filter matches nothing: the test checks nothing")
	}
	out, _ = queryStore(t, st, f)
	sameFrames(t, decodeAll(t, out), want)
}
