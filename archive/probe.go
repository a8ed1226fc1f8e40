package archive

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/stage"
)

// DefaultStoreWait is the default of --store-wait.
const DefaultStoreWait = 30 * time.Second

// probeStore lists the top of the store before anything is consumed, so an
// unreachable S3 endpoint, a missing bucket or bad credentials show at
// start instead of when the first chunk is stored (--chunk-age later). It
// retries for wait (0: until ctx ends), logging the cause, then returns a
// ConfigError of one line (exit 2) naming the cause and the flags.
func probeStore(ctx context.Context, st store.Store, wait time.Duration, log *slog.Logger) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := st.Dirs(cctx, "")
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wait > 0 && time.Since(start) >= wait {
			return stage.ConfigError(fmt.Errorf("--store %s not usable after %s: %v (check --store, --s3-endpoint and the credentials; --store-wait waits longer)", st, time.Since(start).Round(time.Second), err))
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("store not reachable, retrying", "store", st.String(), "err", err, "store_wait", wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
