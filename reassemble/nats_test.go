package reassemble

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tapline/tapline/proto/natstest"
)

func natstestRun(t *testing.T) (*server.Server, string) { return natstest.Run(t) }
