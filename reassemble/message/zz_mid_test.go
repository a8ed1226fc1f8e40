package message_test

import (
	"fmt"
	"testing"
)

func TestZZMid(t *testing.T) {
	segs := readSegments(t, "/tmp/mid.pcapng")
	// keep only s2c data, merge k consecutive
	var s2c []segment
	for _, s := range segs {
		if s.src == "10.77.1.1:42799" && len(s.payload) > 0 {
			s2c = append(s2c, s)
		}
	}
	for k := 1; k <= 64; k++ {
		var merged []segment
		for i := 0; i < len(s2c); i += k {
			m := s2c[i]
			var p []byte
			for j := i; j < min(i+k, len(s2c)); j++ {
				p = append(p, s2c[j].payload...)
			}
			m.payload = p
			merged = append(merged, m)
		}
		col := feed(t, merged, true)
		bad := 0
		for _, m := range col.msgs {
			if !m.Complete {
				bad++
			}
		}
		fmt.Printf("k=%d msgs=%d incomplete=%d first2=%v/%d\n", k, len(col.msgs), bad, col.msgs[1].Opcode, col.msgs[1].Size)
	}
}
