package message

import (
	"fmt"
	"os"
)

func init() {
	if os.Getenv("HUNTDEBUG") != "" {
		debugHunt = func(s *side, c cand, end int64) {
			h := s.hunt
			fmt.Printf("resume %s base=%d end=%d cand=%+v\n", s.dir, h.base, end, c)
			for i := 0; i < c.nh && i < 3; i++ {
				if p := c.hdrs[i] - h.base; p >= 0 {
					fmt.Printf("  hdr %d: % x\n", i, h.buf[p:min(int64(len(h.buf)), p+14)])
				}
			}
		}
	}
}
