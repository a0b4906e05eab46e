// Package health serves liveness (/healthz) and readiness (/readyz) for
// every DocuVault process.
package health

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/docuvault/docuvault/internal/problem"
)

// Check is one dependency probe; Name is what /readyz reports.
type Check struct {
	Name  string
	Probe func(ctx context.Context) error
}

// Live answers 200 while the process serves HTTP at all.
func Live(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

// Ready runs every check (each bounded by timeout) and answers 200 when all
// pass, or 503 problem+json naming the failed dependencies. The failure
// text is logged, not returned: it can name hosts.
func Ready(log *slog.Logger, timeout time.Duration, checks ...Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		type result struct {
			name string
			err  error
		}
		results := make(chan result, len(checks))
		for _, c := range checks {
			go func() { results <- result{c.Name, c.Probe(ctx)} }()
		}
		status := map[string]string{}
		var failed []string
		for range checks {
			res := <-results
			status[res.name] = "ok"
			if res.err != nil {
				status[res.name] = "unavailable"
				failed = append(failed, res.name)
				log.Warn("readiness check failed", "dependency", res.name, "err", res.err)
			}
		}
		if len(failed) > 0 {
			slices.Sort(failed)
			d := problem.New(http.StatusServiceUnavailable, "dependency-unavailable", "Dependency unavailable",
				"not reachable: "+strings.Join(failed, ", "))
			d.Extra = map[string]any{"checks": status}
			problem.Write(w, r, d)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ready", "checks": status})
	}
}

// Handler serves /healthz, /readyz (with checks) and /metrics for the
// relay and the consumer, which have no other HTTP surface.
func Handler(log *slog.Logger, metrics http.Handler, checks ...Check) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", Live)
	mux.Handle("GET /readyz", Ready(log, 2*time.Second, checks...))
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(http.StatusNotFound, "not-found", "Not found", "no such resource"))
	})
	return mux
}
