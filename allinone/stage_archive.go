package allinone

import (
	"context"
	"flag"

	"github.com/tapline/tapline/archive"
	"github.com/tapline/tapline/proto/stage"
)

func init() {
	register("archive", func() *Stage {
		c := &archive.Config{}
		return &Stage{
			Name:     "archive",
			Common:   &c.Common,
			Register: func(fs *flag.FlagSet) { c.Register(fs) },
			Validate: c.Validate,
			Run:      func(ctx context.Context, d stage.Deps) error { return archive.Run(ctx, *c, d) },
		}
	})
}
