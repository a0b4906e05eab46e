package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/health"
	"github.com/docuvault/docuvault/internal/httpserver"
	"github.com/docuvault/docuvault/internal/metrics"
	"github.com/docuvault/docuvault/internal/store"
)

const usage = `usage: consumer [--env-file PATH] [command]

Consumes document events from Redis Streams. Settings: DATABASE_URL, REDIS_URL,
MINIO_ENDPOINT, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, MINIO_BUCKET, SECRET_KEY,
METRICS_ADDR (default 127.0.0.1:9102); .env.example documents every key.

commands (they need REDIS_URL only):
  dead-letters list [--limit N] [--json]  the dead letters, oldest first (default
                                          limit 100; --json: one object a line)
  dead-letters retry (ID... | --all)      re-publish each to its original stream,
                                          then remove it from the dead letters
  dead-letters drop (ID... | --all)       remove dead letters
Named IDs are all checked first: if one is unknown, nothing is changed.
`

// Config is the consumer's configuration.
type Config struct {
	Database    *pgxpool.Config   // DATABASE_URL
	Redis       *redis.Options    // REDIS_URL
	S3          config.S3         // MINIO_*
	MetricsAddr string            // METRICS_ADDR: /metrics, /healthz, /readyz
	Quota       store.QuotaLimits // QUOTA_DEFAULT_BYTES, QUOTA_DEFAULT_DOCUMENTS
	ClaimAfter  time.Duration     // CLAIM_AFTER: a consumer without a heartbeat this long is dead
	SecretKey   string            // SECRET_KEY: opens cloud credentials (HKDF-derived key)
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
	if cfg.S3, err = config.ObjectStorage(src); err != nil {
		return cfg, err
	}
	if !strings.Contains(src.Get("DATABASE_URL"), "pool_max_conns") {
		// Each finalize group and each finalize worker finalising one by
		// one holds a connection at a time, and the cloud sync workers,
		// the notifier and the sweep need theirs: pgx's default (4 here)
		// made workers queue for connections.
		cfg.Database.MaxConns = finalizeWorkers + finalizeGroups + 8
	}
	// The consumer's commits do not wait for the WAL flush. Everything it
	// writes follows from an event or a sweep that is repeated if the
	// write is lost: a database crash losing a committed "ready" (with its
	// quota charge, processed mark and event, all in one transaction)
	// leaves the document pending, and the sweep re-queues its upload
	// event, whose redelivery finds the object at its final key. What the
	// API acknowledged to a client is committed durably (by the API). On
	// this machine's disk a flush sometimes stalls for 100-300 ms, which
	// showed as the tail of upload->ready latency.
	cfg.Database.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	cfg.MetricsAddr = cmp.Or(src.Get("METRICS_ADDR"), "127.0.0.1:9102")
	if cfg.Quota.Bytes, cfg.Quota.Documents, err = config.QuotaDefaults(src); err != nil {
		return cfg, err
	}
	cfg.ClaimAfter = DefaultClaimAfter
	if raw := src.Get("CLAIM_AFTER"); raw != "" {
		if cfg.ClaimAfter, err = config.PositiveDuration("CLAIM_AFTER", raw); err != nil {
			return cfg, err
		}
		if cfg.ClaimAfter < 3*time.Second {
			return cfg, &config.Error{Key: "CLAIM_AFTER", Problem: fmt.Sprintf("%s is too short: heartbeats go every third of it (at least 3s)", raw)}
		}
	}
	if cfg.SecretKey, err = config.Secret(src); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate checks the settings that parsing alone does not.
func (c Config) Validate() error {
	return config.ListenAddr("METRICS_ADDR", c.MetricsAddr)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	err := runConsumer(ctx, args, getenv, stdout)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Stopped (SIGTERM) while starting or subscribing: a shutdown, not
		// a failure.
		return nil
	}
	return err
}

func runConsumer(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cmd, rest, src, err := config.Load("consumer", args, getenv)
	if errors.Is(err, flag.ErrHelp) || cmd == "help" {
		_, _ = io.WriteString(stdout, usage)
		return nil
	}
	if err != nil {
		return err
	}
	if cmd == "dead-letters" {
		return deadLetters(ctx, rest, src, getenv, stdout)
	}
	if cmd != "" {
		return fmt.Errorf("unknown command %q (see `consumer help`)", cmd)
	}
	log, err := config.Logger(src, stdout)
	if err != nil {
		return err
	}
	log = log.With("process", "consumer")
	config.RedisLogs(log)
	for _, w := range src.Warnings {
		log.Warn(w)
	}
	cfg, err := loadConfig(src)
	if err != nil {
		return err
	}
	log.Info("starting", "database", config.SafeDSN(cfg.Database), "redis", cfg.Redis.Addr, "redis_db", cfg.Redis.DB,
		"object_storage", cfg.S3.Endpoint.HostPort, "bucket", cfg.S3.Bucket)

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
	// A wrong bucket would make every upload look lost: refuse to start.
	if err := blobs.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // stopped while checking
		}
		return fmt.Errorf("MINIO_BUCKET: %s", config.Redact(err.Error(), cfg.S3.SecretKey))
	}

	reg := metrics.NewRegistry()
	ops := health.Handler(log, metrics.Handler(reg),
		health.Check{Name: "postgres", Probe: pool.Ping},
		health.Check{Name: "redis", Probe: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		health.Check{Name: "object_storage", Probe: blobs.Ping},
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serverErr := httpserver.Start(ctx, cancel, log, "metrics", cfg.MetricsAddr, ops)

	notifier := store.NewNotifier(pool, log)
	go notifier.Run(ctx)
	fin := finalize.New(log, pool, blobs, notifier, cfg.Quota)
	fin.Instrument(reg)
	// Cloud sync: a handler in its own consumer group plans the copies and
	// removals; the syncer's workers make them (cloudsync package doc).
	sealer, err := cloudsync.NewSealer(cfg.SecretKey)
	if err != nil {
		cancel()
		return errors.Join(err, <-serverErr)
	}
	syncer := cloudsync.New(log, pool, blobs, cloudsync.NewConnector(sealer), notifier, cloudsync.Config{})

	name := consumerName(cfg.MetricsAddr)
	live := &liveness{ttl: cfg.ClaimAfter, rdb: rdb, log: log, started: time.Now(),
		names: []string{finalizeConsumer(name), cloudSyncConsumer(name)}}
	deps := routerDeps{log: log, redisOpts: cfg.Redis, name: name, fin: fin, live: live,
		metrics: newHandlerMetrics(reg, rdb), lost: new(atomic.Bool)}

	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		live.run(ctx)
	}()
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		fin.Sweep(ctx, finalize.SweepConfig{})
	}()
	batchesDone := make(chan struct{})
	go func() {
		defer close(batchesDone)
		fin.RunBatches(ctx, finalizeGroups, finalizeWorkers)
	}()
	removerDone := make(chan struct{})
	go func() {
		defer close(removerDone)
		fin.RunRemover(ctx)
	}()
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		syncer.Run(ctx)
	}()

	runErr := runRouters(ctx, log, deps, syncer)
	cancel()
	<-liveDone
	<-sweepDone
	<-batchesDone
	<-removerDone
	<-syncDone
	err = errors.Join(runErr, <-serverErr)
	log.Info("stopped")
	return err
}

// runRouters runs the consumer's router until ctx ends. When every
// subscription stopped because Redis lost the consumer groups (restarted
// empty), it builds a new router, whose subscribers re-create the groups
// and read the new streams from their start; the sweep re-publishes the
// uploads whose events Redis lost. Any other end of the router is an error.
func runRouters(ctx context.Context, log *slog.Logger, d routerDeps, syncer *cloudsync.Syncer) error {
	for {
		d.lost.Store(false)
		router, err := newRouter(d)
		if err == nil {
			err = addCloudSyncHandler(d, router, syncer)
		}
		if err != nil {
			return err
		}
		err = router.Run(ctx)
		switch {
		case ctx.Err() != nil:
			// A shutdown while the router is still subscribing ends its
			// subscriptions with context.Canceled: that is the shutdown.
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case d.lost.Load():
			log.Warn("Redis lost the consumer groups (restarted empty?): subscribing again")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		default:
			return fmt.Errorf("every Redis subscription ended: %v", err)
		}
	}
}
