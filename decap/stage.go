package decap

import (
	"context"

	"github.com/tapline/tapline/proto/stage"
)

// Stage describes decap for its own command and for the all-in-one, with a
// new configuration.
func Stage() *stage.Descriptor {
	c := &Config{}
	return &stage.Descriptor{
		Name:     "decap",
		Common:   &c.Common,
		Register: c.Register,
		Validate: c.Validate,
		Run:      func(ctx context.Context, d stage.Deps) error { return Run(ctx, *c, d) },
	}
}
