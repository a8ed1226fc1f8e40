// Command reassemble consumes decapsulated frames from TAPLINE_FRAMES,
// reassembles TCP connections and publishes their messages and connection
// events to TAPLINE_MSGS. See reassemble/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble"
)

func main() {
	var cfg reassemble.Config
	fs := flag.NewFlagSet("reassemble", flag.ContinueOnError)
	cfg.Register(fs)
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	stage.Main(fs, &cfg.Common, os.Args[1:], cfg.Validate, func(ctx context.Context, d stage.Deps) error {
		if *cpuProfile != "" {
			f, err := os.Create(*cpuProfile)
			if err != nil {
				return stage.ConfigError(fmt.Errorf("--cpu-profile: %w", err))
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		return reassemble.Run(ctx, cfg, d)
	})
}
