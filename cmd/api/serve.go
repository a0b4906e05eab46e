package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/auth"
	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/httpserver"
	"github.com/docuvault/docuvault/internal/metrics"
	"github.com/docuvault/docuvault/internal/store"
)

// Config is the API server's configuration.
type Config struct {
	Database        *pgxpool.Config   // DATABASE_URL, the runtime role
	Redis           *redis.Options    // REDIS_URL
	S3              config.S3         // MINIO_*
	HTTPAddr        string            // HTTP_ADDR, also serves /metrics
	UploadMaxBytes  int64             // UPLOAD_MAX_BYTES
	DuplicatePolicy string            // DUPLICATE_POLICY: allow or reject
	Quota           store.QuotaLimits // QUOTA_DEFAULT_BYTES, QUOTA_DEFAULT_DOCUMENTS
	SecretKey       string            // SECRET_KEY: seals cloud credentials and signs access tokens (HKDF-derived keys)

	UploadConcurrencyPerClient int            // UPLOAD_CONCURRENCY_PER_CLIENT: uploads one client may send at once
	TrustedProxies             []netip.Prefix // TRUSTED_PROXIES: reverse proxies whose X-Forwarded-For is believed

	Auth           httpapi.AuthConfig // AUTH_REGISTRATION, AUTH_REFRESH_TOKEN_TTL, AUTH_*_RATE_PER_*
	AccessTokenTTL time.Duration      // AUTH_ACCESS_TOKEN_TTL
}

// Bounds of the token lifetimes: an access token lives long enough to be
// used and short enough that a stolen one expires soon; a refresh token
// outlives the access token it renews.
const (
	minAccessTokenTTL  = time.Minute
	maxAccessTokenTTL  = 24 * time.Hour
	minRefreshTokenTTL = time.Hour
	maxRefreshTokenTTL = 366 * 24 * time.Hour
)

// loadAuthConfig reads the AUTH_* settings.
func loadAuthConfig(src *config.Source, cfg *Config) error {
	cfg.Auth.Registration = cmp.Or(src.Get("AUTH_REGISTRATION"), httpapi.RegistrationOpen)
	if err := config.OneOf("AUTH_REGISTRATION", cfg.Auth.Registration,
		httpapi.RegistrationOpen, httpapi.RegistrationFirstUser, httpapi.RegistrationClosed); err != nil {
		return err
	}
	ttl := func(key string, def, lo, hi time.Duration) (time.Duration, error) {
		raw := src.Get(key)
		if raw == "" {
			return def, nil
		}
		d, err := config.PositiveDuration(key, raw)
		if err != nil {
			return 0, err
		}
		if d < lo || d > hi {
			return 0, &config.Error{Key: key, Problem: fmt.Sprintf("%s is not between %s and %s", d, lo, hi)}
		}
		return d, nil
	}
	var err error
	if cfg.AccessTokenTTL, err = ttl("AUTH_ACCESS_TOKEN_TTL", auth.DefaultAccessTokenTTL, minAccessTokenTTL, maxAccessTokenTTL); err != nil {
		return err
	}
	if cfg.Auth.RefreshTokenTTL, err = ttl("AUTH_REFRESH_TOKEN_TTL", auth.DefaultRefreshTokenTTL, minRefreshTokenTTL, maxRefreshTokenTTL); err != nil {
		return err
	}
	if cfg.Auth.RefreshTokenTTL <= cfg.AccessTokenTTL {
		return &config.Error{Key: "AUTH_REFRESH_TOKEN_TTL", Problem: fmt.Sprintf("%s must be longer than AUTH_ACCESS_TOKEN_TTL (%s)", cfg.Auth.RefreshTokenTTL, cfg.AccessTokenTTL)}
	}
	limits := auth.DefaultLimits
	for key, l := range map[string]*auth.Limit{
		"AUTH_LOGIN_RATE_PER_IP": &limits.LoginPerIP, "AUTH_LOGIN_RATE_PER_ACCOUNT": &limits.LoginPerAccount,
		"AUTH_REGISTER_RATE_PER_IP": &limits.RegisterPerIP, "AUTH_REGISTER_RATE_PER_ACCOUNT": &limits.RegisterPerAccount,
		"AUTH_REFRESH_RATE_PER_IP": &limits.RefreshPerIP, "AUTH_REFRESH_RATE_PER_ACCOUNT": &limits.RefreshPerAccount,
	} {
		if raw := src.Get(key); raw != "" {
			if l.Count, l.Period, err = config.RateLimit(key, raw); err != nil {
				return err
			}
		}
	}
	cfg.Auth.Limits = limits
	return nil
}

// DefaultPoolSize is the API's PostgreSQL pool size unless DATABASE_URL
// sets pool_max_conns.
const DefaultPoolSize = 20

// DefaultUploadMaxBytes is UPLOAD_MAX_BYTES unless set: 100 MiB.
const DefaultUploadMaxBytes = 100 << 20

// maxUploadConcurrencyPerClient bounds UPLOAD_CONCURRENCY_PER_CLIENT: a
// larger value is no limit, and likely a typo.
const maxUploadConcurrencyPerClient = 10_000

func loadServeConfig(src *config.Source) (Config, error) {
	var cfg Config
	var err error
	if cfg.Database, err = config.Database(src, "DATABASE_URL"); err != nil {
		return cfg, err
	}
	if cfg.Redis, err = config.Redis(src); err != nil {
		return cfg, err
	}
	if cfg.S3, err = config.ObjectStorage(src); err != nil {
		return cfg, err
	}
	if !strings.Contains(src.Get("DATABASE_URL"), "pool_max_conns") {
		// Uploads hold a connection only for their final transaction, but
		// pgx's default (4 on this machine size) queues concurrent ones.
		cfg.Database.MaxConns = DefaultPoolSize
	}
	cfg.HTTPAddr = cmp.Or(src.Get("HTTP_ADDR"), "127.0.0.1:8080")
	cfg.UploadMaxBytes = DefaultUploadMaxBytes
	if raw := src.Get("UPLOAD_MAX_BYTES"); raw != "" {
		if cfg.UploadMaxBytes, err = config.PositiveInt("UPLOAD_MAX_BYTES", raw); err != nil {
			return cfg, err
		}
	}
	cfg.UploadConcurrencyPerClient = httpapi.DefaultUploadConcurrencyPerClient
	if raw := src.Get("UPLOAD_CONCURRENCY_PER_CLIENT"); raw != "" {
		n, err := config.PositiveInt("UPLOAD_CONCURRENCY_PER_CLIENT", raw)
		if err != nil {
			return cfg, err
		}
		if n > maxUploadConcurrencyPerClient {
			return cfg, &config.Error{Key: "UPLOAD_CONCURRENCY_PER_CLIENT",
				Problem: fmt.Sprintf("%d is more than %d", n, maxUploadConcurrencyPerClient)}
		}
		cfg.UploadConcurrencyPerClient = int(n)
	}
	if cfg.TrustedProxies, err = config.TrustedProxies("TRUSTED_PROXIES", src.Get("TRUSTED_PROXIES")); err != nil {
		return cfg, err
	}
	cfg.DuplicatePolicy = cmp.Or(src.Get("DUPLICATE_POLICY"), "allow")
	if cfg.Quota.Bytes, cfg.Quota.Documents, err = config.QuotaDefaults(src); err != nil {
		return cfg, err
	}
	if cfg.SecretKey, err = config.Secret(src); err != nil {
		return cfg, err
	}
	if err := loadAuthConfig(src, &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate checks the settings that parsing alone does not.
func (c Config) Validate() error {
	if err := config.ListenAddr("HTTP_ADDR", c.HTTPAddr); err != nil {
		return err
	}
	if c.UploadMaxBytes > blob.MaxObjectSize {
		return &config.Error{Key: "UPLOAD_MAX_BYTES", Problem: fmt.Sprintf("%d exceeds the largest object a streamed upload can make (%d)", c.UploadMaxBytes, int64(blob.MaxObjectSize))}
	}
	return config.OneOf("DUPLICATE_POLICY", c.DuplicatePolicy, "allow", "reject")
}

func serve(ctx context.Context, log *slog.Logger, cfg Config) error {
	log.Info("starting",
		"database", config.SafeDSN(cfg.Database),
		"redis", cfg.Redis.Addr, "redis_db", cfg.Redis.DB,
		"object_storage", cfg.S3.Endpoint.HostPort, "bucket", cfg.S3.Bucket,
		"upload_max_bytes", cfg.UploadMaxBytes, "upload_concurrency_per_client", cfg.UploadConcurrencyPerClient,
		"trusted_proxies", fmt.Sprint(cfg.TrustedProxies),
		"duplicate_policy", cfg.DuplicatePolicy, "registration", cfg.Auth.Registration,
		"access_token_ttl", cfg.AccessTokenTTL.String(), "refresh_token_ttl", cfg.Auth.RefreshTokenTTL.String())

	pool, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	rdb := redis.NewClient(cfg.Redis)
	defer rdb.Close()
	blobs, err := blob.New(cfg.S3)
	if err != nil {
		return err
	}

	notifier := store.NewNotifier(pool, log)
	notifyCtx, stopNotify := context.WithCancel(ctx)
	defer stopNotify()
	go notifier.Run(notifyCtx)

	sealer, err := cloudsync.NewSealer(cfg.SecretKey)
	if err != nil {
		return err
	}
	tokens, err := auth.NewIssuer(cfg.SecretKey, auth.IssuerConfig{TTL: cfg.AccessTokenTTL})
	if err != nil {
		return err
	}

	reg := metrics.NewRegistry()
	h := httpapi.New(httpapi.Deps{
		Cloud:    cloudsync.NewConnector(sealer),
		Notifier: notifier,
		Config: httpapi.Config{UploadMaxBytes: cfg.UploadMaxBytes, DuplicatePolicy: cfg.DuplicatePolicy, Quota: cfg.Quota,
			UploadConcurrencyPerClient: cfg.UploadConcurrencyPerClient, TrustedProxies: cfg.TrustedProxies, Auth: cfg.Auth},
		Tokens:    tokens,
		Passwords: auth.NewHasher(auth.DefaultArgon2),
		Log:       log,
		DB:        pool,
		Redis:     rdb,
		Blobs:     blobs,
		Metrics:   metrics.Handler(reg),
		Registry:  reg,
	})
	housekeeping, stopHousekeeping := context.WithCancel(ctx)
	defer stopHousekeeping()
	go deleteExpiredRefreshTokens(housekeeping, log, pool, time.Hour)
	err = httpserver.Run(ctx, log, "api", cfg.HTTPAddr, h)
	log.Info("stopped")
	return err
}

// deleteExpiredRefreshTokens deletes, every interval until ctx ends,
// refresh tokens expired for more than a day, in batches (every API
// replica does; the deletes are idempotent).
func deleteExpiredRefreshTokens(ctx context.Context, log *slog.Logger, db store.DBTX, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var total int64
		for {
			n, err := store.DeleteExpiredRefreshTokens(ctx, db, 24*time.Hour, 1000)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("delete expired refresh tokens", "err", err)
				}
				break
			}
			total += n
			if n < 1000 {
				break
			}
		}
		if total > 0 {
			log.Info("expired refresh tokens deleted", "count", total)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
