package decap

import (
	"testing"

	"github.com/tapline/tapline/decap/internal/testutil"
	"github.com/tapline/tapline/proto/framebatch"
)

const captures = "../testdata/captures/"

func TestReadCaptureAWS(t *testing.T) {
	st := testutil.NewStreams()
	n := 0
	shards := map[string]int{}
	err := ReadCaptureShards(captures+"aws-vpc-mirror-vxlan-ssh.pcap", 16, func(f *framebatch.Frame, sh int) error {
		n++
		if f.VNI != 5569041 || f.Encap != framebatch.EncapVXLAN || f.OuterSrc.String() != "172.31.0.238" {
			t.Fatalf("frame %d: %+v", n, f.Iface())
		}
		st.Add(f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = shards
	if n != 100 {
		t.Fatalf("%d frames, want 100", n)
	}
	for _, p := range []string{"37180", "37182", "37184", "37186"} {
		c2s := st.Bytes("18.196.145.224:" + p + " -> 172.31.0.238:22")
		s2c := st.Bytes("172.31.0.238:22 -> 18.196.145.224:" + p)
		want := 1785
		if p == "37186" {
			want = 1701
		}
		if len(c2s) != 1601 || len(s2c) != want {
			t.Errorf("port %s: c2s %d s2c %d", p, len(c2s), len(s2c))
		}
	}
}
