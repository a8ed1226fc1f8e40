package decap

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tapline/tapline/decap/capture"
	"github.com/tapline/tapline/decap/decode"
	"github.com/tapline/tapline/decap/shard"
	"github.com/tapline/tapline/proto/framebatch"
)

// ReadCapture reads a pcap or pcapng file, encapsulated (VXLAN on UDP 4789,
// GENEVE on UDP 6081, with outer Ethernet/VLAN/IPv4/IPv6) or plain (taken
// as already decapsulated: encapsulation none, VNI 0), and calls fn with
// each inner frame exactly as decap --read would publish it: capture
// timestamp in ns, VNI, encapsulation, link type, outer source, original
// length (from the inner IP header when the mirror truncated the packet)
// and the bytes. Undecodable packets are skipped (decap counts them).
//
// f and f.Data are only valid during the call: copy what you keep. An
// error from fn stops the reading and is returned; a corrupt or truncated
// file gives an error wrapping capture.ErrFormat.
func ReadCapture(path string, fn func(f *framebatch.Frame) error) error {
	return ReadCaptureShards(path, 1, func(f *framebatch.Frame, _ int) error { return fn(f) })
}

// ReadCaptureShards is ReadCapture that also gives each frame's shard out of
// shards, as decap computes it (symmetric flow hash mod shards, fragments
// on the shard of their first fragment, non-IP frames on shard 0). With the
// same shards, a frame is published by decap on
// proto.FramesSubject(f.VNI, shard).
func ReadCaptureShards(path string, shards int, fn func(f *framebatch.Frame, shard int) error) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	return readCapture(file, decode.New(decode.Config{}, decode.NewStats()), shard.New(shards, 0), fn)
}

func readCapture(r io.Reader, dec *decode.Decoder, sh *shard.Sharder, fn func(f *framebatch.Frame, shard int) error) error {
	cr, err := capture.NewReader(r)
	if err != nil {
		return err
	}
	var cp capture.Packet
	var p decode.Packet
	for {
		if err := cr.Next(&cp); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !dec.Captured(&p, cp.LinkType, cp.Data, cp.TimeNs, cp.Iface) {
			continue
		}
		if err := fn(&p.Frame, sh.Shard(&p.Key, p.HasFlow)); err != nil {
			return fmt.Errorf("decap: %w", err)
		}
	}
}
