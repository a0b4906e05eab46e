package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/dbinit"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/migrations"
)

// initDB provisions the database and roles named in DATABASE_URL and
// DATABASE_MIGRATE_URL through the superuser in DATABASE_ADMIN_URL.
func initDB(ctx context.Context, log *slog.Logger, src *config.Source) error {
	admin, err := config.Database(src, "DATABASE_ADMIN_URL")
	if err != nil {
		return err
	}
	app, err := config.Database(src, "DATABASE_URL")
	if err != nil {
		return err
	}
	mig, err := config.Database(src, "DATABASE_MIGRATE_URL")
	if err != nil {
		return err
	}
	plan, err := dbinit.PlanFrom(app.ConnConfig, mig.ConnConfig)
	if err != nil {
		return err
	}
	secrets := []string{admin.ConnConfig.Password, app.ConnConfig.Password, mig.ConnConfig.Password}

	conn, err := pgx.ConnectConfig(ctx, admin.ConnConfig)
	if err != nil {
		return fmt.Errorf("DATABASE_ADMIN_URL: connect to %s: %s", config.SafeDSN(admin), config.Redact(err.Error(), secrets...))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	connectTo := func(ctx context.Context, database string) (*pgx.Conn, error) {
		cc := admin.ConnConfig.Copy()
		cc.Database = database
		return pgx.ConnectConfig(ctx, cc)
	}
	log.Info("init-db", "admin", config.SafeDSN(admin), "database", plan.Database,
		"app_role", plan.App.Name, "migrate_role", plan.Migrate.Name)
	changes, err := dbinit.Provision(ctx, conn, connectTo, plan, log)
	if err != nil {
		return fmt.Errorf("init-db: %s", config.Redact(err.Error(), secrets...))
	}
	log.Info("init-db done", "changes", len(changes))
	return nil
}

// migrateCmd applies the embedded migrations as the migration role.
func migrateCmd(ctx context.Context, log *slog.Logger, src *config.Source) error {
	cfg, err := config.Database(src, "DATABASE_MIGRATE_URL")
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("DATABASE_MIGRATE_URL: connect to %s: %s", config.SafeDSN(cfg), config.Redact(err.Error(), cfg.ConnConfig.Password))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res, err := store.Migrate(ctx, conn, migrations.FS, func(seq int32, name string) {
		log.Info("applying migration", "version", seq, "name", name)
	})
	if err != nil {
		return err
	}
	if res.From == res.To {
		log.Info("schema up to date", "version", res.To)
	} else {
		log.Info("migrated", "from", res.From, "to", res.To)
	}
	return nil
}

// initBucket creates the object storage bucket unless it exists.
func initBucket(ctx context.Context, log *slog.Logger, src *config.Source) error {
	cfg, err := config.ObjectStorage(src)
	if err != nil {
		return err
	}
	store, err := blob.New(cfg)
	if err != nil {
		return err
	}
	created, err := store.EnsureBucket(ctx)
	if err != nil {
		return fmt.Errorf("MINIO_ENDPOINT %s: %s", cfg.Endpoint.HostPort, config.Redact(err.Error(), cfg.SecretKey))
	}
	log.Info("bucket ready", "bucket", cfg.Bucket, "created", created)
	return nil
}
