package allinone

import (
	"context"
	"flag"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/proto/stage"
)

func init() {
	register("decap", func() *Stage {
		c := &decap.Config{}
		return &Stage{
			Name:     "decap",
			Common:   &c.Common,
			Register: func(fs *flag.FlagSet) { c.Register(fs) },
			Validate: c.Validate,
			Run:      func(ctx context.Context, d stage.Deps) error { return decap.Run(ctx, *c, d) },
		}
	})
}
