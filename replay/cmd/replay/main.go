// Command replay consumes the Tapline messages stream and replays the
// mirrored conversations against a test system. See replay/README.md.
package main

import (
	"os"

	"github.com/tapline/tapline/replay"
)

func main() {
	os.Exit(replay.Stage().Main(os.Args[1:]))
}
