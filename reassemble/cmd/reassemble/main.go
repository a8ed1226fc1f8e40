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
	d := reassemble.Stage()
	// --cpu-profile belongs to this command (the whole process), not to
	// the stage: the all-in-one has no such flag.
	var cpuProfile string
	register, run := d.Register, d.Run
	d.Register = func(fs *flag.FlagSet) {
		register(fs)
		fs.StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	}
	d.Run = func(ctx context.Context, deps stage.Deps) error {
		if cpuProfile != "" {
			f, err := os.Create(cpuProfile)
			if err != nil {
				return stage.ConfigError(fmt.Errorf("--cpu-profile: %w", err))
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		return run(ctx, deps)
	}
	os.Exit(d.Main(os.Args[1:]))
}
