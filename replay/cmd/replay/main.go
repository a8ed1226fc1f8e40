// Command replay consumes the Tapline messages stream and replays the
// mirrored conversations against a test system. See replay/README.md.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/replay"
)

func main() {
	var cfg replay.Config
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	cfg.Register(fs)
	stage.Main(fs, &cfg.Common, os.Args[1:], cfg.Validate, func(ctx context.Context, d stage.Deps) error {
		return replay.Run(ctx, cfg, d)
	})
}
