// Command reassemble consumes decapsulated frames from TAPLINE_FRAMES,
// reassembles TCP connections and publishes their messages and connection
// events to TAPLINE_MSGS. See reassemble/README.md.
package main

import (
	"os"

	"github.com/tapline/tapline/reassemble"
)

func main() {
	os.Exit(reassemble.Stage().Main(os.Args[1:]))
}
