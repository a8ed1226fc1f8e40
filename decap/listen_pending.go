package decap

import (
	"context"
	"errors"
)

// Intake is an opened datagram intake (decap/udpin, pending).
type Intake interface{ Close() }

func (e *engine) listen(ctx context.Context) error {
	return errors.New("network intake not available yet")
}
