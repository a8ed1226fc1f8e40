package e2e

import (
	"fmt"
	"testing"
	"time"
)

// checkArchiveExact waits until `archive query` over the whole archive
// returns as many packets as TAPLINE_FRAMES holds frames, and fails the
// test when it does not within d: every frame decap stored is archived
// exactly once (more packets than frames is a frame archived twice, fewer
// one not archived). It returns both counts.
func checkArchiveExact(t testing.TB, p *Pipeline, d time.Duration) (frames, archived int) {
	t.Helper()
	frames, err := p.StreamFrames()
	if err != nil {
		t.Fatalf("frames stream: %v", err)
	}
	deadline := time.Now().Add(d)
	for {
		archived, err = p.ArchivePackets()
		if err == nil && archived == frames {
			return frames, archived
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("archive holds %d packets, the frames stream %d frames (%+d)", archived, frames, archived-frames)
			}
			t.Errorf("archive not exactly once after %v: %v", d, err)
			return frames, archived
		}
		time.Sleep(2 * time.Second)
	}
}
