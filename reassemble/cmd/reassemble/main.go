// Command reassemble consumes decapsulated frames from TAPLINE_FRAMES,
// reassembles TCP connections and publishes their messages and connection
// events to TAPLINE_MSGS. See reassemble/README.md.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble"
)

func main() {
	var cfg reassemble.Config
	fs := flag.NewFlagSet("reassemble", flag.ContinueOnError)
	cfg.Register(fs)
	stage.Main(fs, &cfg.Common, os.Args[1:], cfg.Validate, func(ctx context.Context, d stage.Deps) error {
		return reassemble.Run(ctx, cfg, d)
	})
}
