// Package httpapi is DocuVault's HTTP API: routes, handlers and the mapping
// of errors to RFC 9457 problem responses.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/tracing"
)

// Config is the API's behaviour.
type Config struct {
	UploadMaxBytes  int64  // largest file accepted
	DuplicatePolicy string // allow or reject uploads whose content the owner has
	// Quota is the default limits of owners whose quotas row sets none.
	Quota store.QuotaLimits
}

// Deps are what the API's handlers use.
type Deps struct {
	Config  Config
	Log     *slog.Logger
	DB      *pgxpool.Pool
	Redis   *redis.Client
	Blobs   *blob.Store
	Metrics http.Handler
	// Registry receives the API's request metrics (nil: not exposed).
	Registry prometheus.Registerer
	// Cloud seals cloud connection credentials and opens connections
	// (cloudsync; the key comes from SECRET_KEY).
	Cloud *cloudsync.Connector
	// Notifier wakes the relay after a commit wrote outbox rows (nil: the
	// relay's poll finds them).
	Notifier *store.Notifier
}

type server struct {
	Deps
	requests *requestMetrics
}

// New returns the API's handler.
func New(deps Deps) http.Handler {
	s := &server{Deps: deps, requests: newRequestMetrics(deps.Registry)}
	return s.routes()
}

// readinessTimeout bounds each /readyz probe.
const readinessTimeout = 2 * time.Second

// log is the server's logger for lines about r: with its request_id and
// trace_id.
func (s *server) log(r *http.Request) *slog.Logger { return s.Log.With(tracing.Attrs(r.Context())...) }

func (s *server) pingDB(ctx context.Context) error    { return s.DB.Ping(ctx) }
func (s *server) pingRedis(ctx context.Context) error { return s.Redis.Ping(ctx).Err() }
func (s *server) pingBlobs(ctx context.Context) error { return s.Blobs.Ping(ctx) }
