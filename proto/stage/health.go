package stage

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Health collects named readiness checks. /healthz answers 200 when every
// check passes and 503 with the failing checks otherwise. The zero value has
// no checks and is healthy.
type Health struct {
	mu     sync.Mutex
	checks map[string]func() error
}

// Add registers a check under name, replacing any check of that name.
func (h *Health) Add(name string, check func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checks == nil {
		h.checks = map[string]func() error{}
	}
	h.checks[name] = check
}

// Expect declares checks a stage's run will register: each fails
// ("not set up yet") until Add replaces it. A stage calls it first, with
// every check it will need, so it is not healthy in between — when one
// check passes before the next is registered (connected to NATS, streams
// not provisioned yet).
func (h *Health) Expect(names ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checks == nil {
		h.checks = map[string]func() error{}
	}
	for _, name := range names {
		if _, ok := h.checks[name]; !ok {
			h.checks[name] = func() error { return errors.New("not set up yet") }
		}
	}
}

// Starting returns a Health that is unhealthy ("starting") until a check
// other than that one is registered: a stage serves /healthz before its
// run function has said what healthy means (connected, streams ready,
// intake open), and must not look ready meanwhile.
func Starting() *Health {
	h := &Health{}
	h.Add("start", func() error { return errors.New("starting: no check registered yet") })
	return h
}

// Check runs every check and returns the failures by name. The "start"
// check of Starting is dropped once any other check is registered or
// expected.
func (h *Health) Check() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.checks["start"]; ok && len(h.checks) > 1 {
		delete(h.checks, "start")
	}
	failed := map[string]string{}
	for name, c := range h.checks {
		if err := c(); err != nil {
			failed[name] = err.Error()
		}
	}
	return failed
}

// ServeHTTP implements /healthz.
func (h *Health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	failed := h.Check()
	w.Header().Set("Content-Type", "application/json")
	status := map[string]any{"ok": len(failed) == 0}
	if len(failed) > 0 {
		names := make([]string, 0, len(failed))
		for n := range failed {
			names = append(names, n)
		}
		sort.Strings(names)
		status["failing"] = names
		status["errors"] = failed
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(status)
}

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors, the one every stage registers its metrics in.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Mux returns the HTTP handler serving /healthz and /metrics.
func Mux(h *Health, g prometheus.Gatherer) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/healthz", h)
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

// ServeHTTP listens on addr and serves mux until ctx ends. An empty addr
// serves nothing. It returns once the listener is bound (or failed), so a
// bad address is reported at start; the server stops when ctx is done.
func ServeHTTP(ctx context.Context, addr string, mux http.Handler, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("serving /healthz and /metrics", "addr", ln.Addr().String())
	return nil
}
