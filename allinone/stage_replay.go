package allinone

import (
	"context"
	"flag"

	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/replay"
)

func init() {
	register("replay", func() *Stage {
		c := &replay.Config{}
		return &Stage{
			Name:     "replay",
			Common:   &c.Common,
			Register: func(fs *flag.FlagSet) { c.Register(fs) },
			Validate: c.Validate,
			Run:      func(ctx context.Context, d stage.Deps) error { return replay.Run(ctx, *c, d) },
			Off: func() string {
				if len(c.Targets) == 0 && len(c.Listens) == 0 {
					return "no test system: give --replay.target (dial mode) or --replay.listen (listen mode)"
				}
				return ""
			},
		}
	})
}
