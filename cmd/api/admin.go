package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

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

const migrateUsage = `usage: api migrate [--unowned-owner EMAIL | --unowned-delete]

Applies the embedded schema migrations as DATABASE_MIGRATE_URL's role;
running it again changes nothing. Phase 2 requires every document, topic,
folder and cloud connection to have an owner: on a database holding phase 1
data without one, it stops and says so, unless
  --unowned-owner EMAIL  gives it all to that user (create one first with
                         ` + "`api users create --email EMAIL --admin`" + `); the consumer then
                         moves ready documents' objects under users/{id}/
  --unowned-delete       deletes it through the pipeline; run it again once
                         the consumer has removed the objects
`

// migrateCmd applies the embedded migrations as the migration role. Before
// the migration that requires owners, rows phase 1 left without one are
// given to the user --unowned-owner names, or deleted (--unowned-delete).
func migrateCmd(ctx context.Context, global, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("api migrate", flag.ContinueOnError)
	owner := fs.String("unowned-owner", "", "")
	del := fs.Bool("unowned-delete", false, "")
	envFile := fs.String("env-file", "", "")
	if help, err := config.ParseFlags(fs, args, "migrate", migrateUsage, stdout); help || err != nil {
		return err
	}
	if *owner != "" && *del {
		return errors.New("migrate: --unowned-owner and --unowned-delete exclude each other")
	}
	src, err := config.LoadCommand("api", global, *envFile, getenv, os.Stderr)
	if err != nil {
		return err
	}
	log, err := config.Logger(src, stdout)
	if err != nil {
		return err
	}
	log = log.With("process", "api")
	cfg, err := config.Database(src, "DATABASE_MIGRATE_URL")
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("DATABASE_MIGRATE_URL: connect to %s: %s", config.SafeDSN(cfg), config.Redact(err.Error(), cfg.ConnConfig.Password))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res, err := store.MigrateWith(ctx, conn, migrations.FS, func(seq int32, name string) {
		log.Info("applying migration", "version", seq, "name", name)
	}, func(ctx context.Context, conn *pgx.Conn) error { return resolveUnowned(ctx, log, conn, *owner, *del) })
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

// resolveUnowned gives the rows phase 1 left without an owner to the user
// with email owner, or deletes them (del), or says how to.
func resolveUnowned(ctx context.Context, log *slog.Logger, conn *pgx.Conn, owner string, del bool) error {
	n, err := store.CountUnowned(ctx, conn)
	if err != nil || n.Total() == 0 {
		return err
	}
	switch {
	case owner != "":
		u, err := store.UserByEmail(ctx, conn, owner)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("migrate: --unowned-owner: no user has the email %q (create one with `api users create --email %s --admin`)", owner, owner)
		}
		if err != nil {
			return err
		}
		got, err := store.AdoptUnowned(ctx, conn, u.ID)
		if err != nil {
			return fmt.Errorf("migrate: give phase 1 data to %s: %w", owner, err)
		}
		log.Info("phase 1 data given to its owner (the consumer moves ready documents' objects under the owner's prefix)",
			"user_id", u.ID, "documents", got.Documents, "topics", got.Topics, "folders", got.Folders, "cloud_connections", got.CloudConnections)
		return nil
	case del:
		left, paused, err := store.DeleteUnowned(ctx, conn)
		if err != nil {
			return fmt.Errorf("migrate: delete phase 1 data: %w", err)
		}
		if paused > 0 {
			return fmt.Errorf("migrate: %d documents without an owner are deleted and wait for the consumer to remove their objects and remote copies, %d of them on paused cloud connections that will not until resumed: resume them, then run `api migrate --unowned-delete` again", left, paused)
		}
		if left > 0 {
			return fmt.Errorf("migrate: %d documents without an owner are deleted and wait for the consumer to remove their objects and remote copies: run `api migrate --unowned-delete` again once it has", left)
		}
		log.Info("phase 1 data deleted", "documents", n.Documents, "topics", n.Topics, "folders", n.Folders, "cloud_connections", n.CloudConnections)
		return nil
	}
	return fmt.Errorf("migrate: %s have no owner (phase 1): give them to a user with `api migrate --unowned-owner EMAIL`, or delete them with `api migrate --unowned-delete`", n)
}
