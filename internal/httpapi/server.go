// Package httpapi is DocuVault's HTTP API: routes, handlers and the mapping
// of errors to RFC 9457 problem responses.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/auth"
	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/tracing"
)

// Config is the API's behaviour. Zero limits and timeouts mean their
// defaults (limits.go).
type Config struct {
	UploadMaxBytes  int64  // largest file accepted
	DuplicatePolicy string // allow or reject uploads whose content the owner has
	// Quota is the default limits of owners whose quotas row sets none
	// (a zero limit: config.DefaultQuotaBytes, DefaultQuotaDocuments).
	Quota store.QuotaLimits

	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed (TRUSTED_PROXIES): a request from one of them is counted
	// and recorded as coming from the client they forwarded it for
	// (clientip.go). None (the default): the client is the connection's
	// peer and X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix

	// UploadConcurrencyPerClient is how many uploads one client (an IP
	// address; for IPv6 its /64) may send at once; more are answered 429
	// with Retry-After (default DefaultUploadConcurrencyPerClient).
	UploadConcurrencyPerClient int
	// BodyTimeout is how long the body of a request other than an upload
	// may take to arrive (default DefaultBodyTimeout); then 408.
	BodyTimeout time.Duration
	// ResponseTimeout is how long a response other than a download may
	// take to be written, from the request's arrival (plus BodyTimeout when
	// it has a body; an upload's: from the end of its body, a problem's:
	// from its decision); default DefaultResponseTimeout.
	ResponseTimeout time.Duration
	// StallTimeout is how long an upload may send nothing, or a download
	// read nothing, before it is cut (default DefaultStallTimeout).
	StallTimeout time.Duration
	// UploadMinRate is the slowest average rate, in bytes per second, an
	// upload may keep once StallTimeout has passed (default
	// DefaultUploadMinRate); only the time spent waiting for the client
	// counts.
	UploadMinRate int64

	// Auth is how accounts, tokens and their rate limits behave (auth.go).
	Auth AuthConfig
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
	// Tokens issues and verifies access tokens (the key comes from
	// SECRET_KEY). Without it every bearer token is refused and login,
	// refresh, register and password changes fail.
	Tokens *auth.TokenIssuer
	// Passwords hashes and verifies passwords (nil: auth.DefaultArgon2).
	Passwords *auth.Hasher
}

type server struct {
	Deps
	requests *requestMetrics
	uploads  *clientLimiter // uploads in flight per client
	limiter  *auth.RateLimiter
	// trustContext lets a principal already in a request's context stand
	// for authentication: tests only (NewActing).
	trustContext bool
}

// New returns the API's handler.
func New(deps Deps) http.Handler { return newServer(deps).routes() }

func newServer(deps Deps) *server {
	deps.Config = deps.Config.withDefaults()
	deps.Config.Auth = deps.Config.Auth.withDefaults()
	if deps.Passwords == nil {
		deps.Passwords = auth.NewHasher(auth.DefaultArgon2)
	}
	s := &server{Deps: deps, requests: newRequestMetrics(deps.Registry),
		uploads: newClientLimiter(deps.Config.UploadConcurrencyPerClient),
		limiter: auth.NewRateLimiter(deps.Redis, deps.Config.Auth.RateLimitPrefix)}
	return s
}

// readinessTimeout bounds each /readyz probe.
const readinessTimeout = 2 * time.Second

// log is the server's logger for lines about r: with its request_id and
// trace_id.
func (s *server) log(r *http.Request) *slog.Logger { return s.Log.With(tracing.Attrs(r.Context())...) }

func (s *server) pingDB(ctx context.Context) error    { return s.DB.Ping(ctx) }
func (s *server) pingRedis(ctx context.Context) error { return s.Redis.Ping(ctx).Err() }
func (s *server) pingBlobs(ctx context.Context) error { return s.Blobs.Ping(ctx) }
