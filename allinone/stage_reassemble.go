package allinone

import (
	"context"
	"flag"

	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble"
)

func init() {
	register("reassemble", func() *Stage {
		c := &reassemble.Config{}
		return &Stage{
			Name:     "reassemble",
			Common:   &c.Common,
			Register: func(fs *flag.FlagSet) { c.Register(fs) },
			Validate: c.Validate,
			Run:      func(ctx context.Context, d stage.Deps) error { return reassemble.Run(ctx, *c, d) },
		}
	})
}
