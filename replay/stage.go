package replay

import (
	"context"

	"github.com/tapline/tapline/proto/stage"
)

// Stage describes replay for its own command and for the all-in-one, with a
// new configuration.
func Stage() *stage.Descriptor {
	c := &Config{}
	return &stage.Descriptor{
		Name:     "replay",
		Common:   &c.Common,
		Register: c.Register,
		Validate: c.Validate,
		Run:      func(ctx context.Context, d stage.Deps) error { return Run(ctx, *c, d) },
		Off: func() string {
			if len(c.Targets) == 0 && len(c.Listens) == 0 {
				return "no test system: give --replay.target (dial mode) or --replay.listen (listen mode)"
			}
			return ""
		},
	}
}
