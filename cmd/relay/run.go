package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/health"
	"github.com/docuvault/docuvault/internal/httpserver"
	"github.com/docuvault/docuvault/internal/metrics"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
)

const usage = `usage: relay [--env-file PATH] [replay [flags] | audit verify [flags]]

Publishes outbox events to Redis Streams and chains the audit log. Run
several for high availability: one leads and publishes, the others stand by
and take over within seconds.
Settings: DATABASE_URL, REDIS_URL, METRICS_ADDR (default 127.0.0.1:9101),
STREAM_RETENTION (default 168h); .env.example documents every key.
"relay replay --help" describes replaying recorded events, "relay audit
help" verifying the audit chain.
`

// Config is the relay's configuration.
type Config struct {
	Database    *pgxpool.Config // DATABASE_URL
	Redis       *redis.Options  // REDIS_URL
	MetricsAddr string          // METRICS_ADDR: /metrics, /healthz, /readyz
	Retention   time.Duration   // STREAM_RETENTION
}

func loadConfig(src *config.Source) (Config, error) {
	var cfg Config
	var err error
	if cfg.Database, err = config.Database(src, "DATABASE_URL"); err != nil {
		return cfg, err
	}
	if cfg.Redis, err = config.Redis(src); err != nil {
		return cfg, err
	}
	cfg.MetricsAddr = cmp.Or(src.Get("METRICS_ADDR"), "127.0.0.1:9101")
	if cfg.Retention, err = config.PositiveDuration("STREAM_RETENTION", cmp.Or(src.Get("STREAM_RETENTION"), "168h")); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate checks the settings that parsing alone does not.
func (c Config) Validate() error {
	return config.ListenAddr("METRICS_ADDR", c.MetricsAddr)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	err := runRelay(ctx, args, getenv, stdout)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // stopped while starting: a shutdown, not a failure
	}
	return err
}

func runRelay(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if global, rest, ok := config.SplitCommand(args, "replay"); ok {
		// Before the logger: stdout is the replay's output.
		return replay(ctx, global, rest, getenv, stdout, os.Stderr)
	}
	if global, rest, ok := config.SplitCommand(args, "audit"); ok {
		return audit(ctx, global, rest, getenv, stdout, os.Stderr)
	}
	cmd, _, src, err := config.Load("relay", args, getenv)
	if errors.Is(err, flag.ErrHelp) || cmd == "help" {
		_, _ = io.WriteString(stdout, usage)
		return nil
	}
	if err != nil {
		return err
	}
	if cmd != "" {
		return fmt.Errorf("unknown command %q (see `relay help`)", cmd)
	}
	log, err := config.Logger(src, stdout)
	if err != nil {
		return err
	}
	log = log.With("process", "relay")
	config.RedisLogs(log)
	for _, w := range src.Warnings {
		log.Warn(w)
	}
	cfg, err := loadConfig(src)
	if err != nil {
		return err
	}
	log.Info("starting", "database", config.SafeDSN(cfg.Database), "redis", cfg.Redis.Addr, "redis_db", cfg.Redis.DB)

	pool, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	rdb := redis.NewClient(cfg.Redis)
	defer rdb.Close()

	reg := metrics.NewRegistry()
	ops := health.Handler(log, metrics.Handler(reg),
		health.Check{Name: "postgres", Probe: pool.Ping},
		health.Check{Name: "redis", Probe: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serverErr := httpserver.Start(ctx, cancel, log, "metrics", cfg.MetricsAddr, ops)
	r := relay.New(relay.Config{
		Trim:    relay.TrimConfig{Retention: cfg.Retention},
		Metrics: relay.NewMetrics(reg, pool),
	}, log, pool, relay.StreamPublisher{Redis: rdb})
	chainer := relay.NewChainer(relay.ChainConfig{}, log, pool, reg)
	chainDone := make(chan error, 1)
	go func() { chainDone <- chainer.Run(ctx) }()
	log.Info("relaying outbox to Redis Streams", "stream_retention", cfg.Retention.String())
	err = r.Run(ctx)
	cancel()
	err = errors.Join(err, <-chainDone, <-serverErr)
	log.Info("stopped")
	return err
}
