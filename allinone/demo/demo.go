// Package demo is `tapline demo`: the whole Tapline flow on a bundled
// capture, within a minute, on loopback only. It runs the all-in-one,
// sends the capture through `decap send` to the all-in-one's own UDP port,
// replays it into the built-in test system, prints what was received and
// what the mirror lost, and queries the archive into a pcap that tshark
// reads.
package demo

import (
	"fmt"
	"os"
)

// Main runs the demo and returns the process exit code.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "tapline demo: not available in this build yet")
	return 1
}
