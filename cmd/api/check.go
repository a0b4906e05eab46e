package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/check"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/store"
)

const checkUsage = `usage: api check [--deep] [--grace D] [--outbox-age D]

Checks DocuVault's invariants once the system is quiet (docs/invariants.md):
every upload ended ready, rejected with a reason or deleted; every ready
document's object is at its final key with its size (--deep: and SHA-256,
reading every object back); no staged object older than --grace (default
1m) outlives its upload; no object lacks a row; quota usage equals the
ready documents; synced cloud copies exist on their remotes; the audit
chain verifies; no outbox event is older than --outbox-age (default 1m);
every recorded event is on its stream and the audit stream, no group holds
unacknowledged entries, no message went to the dead letters.
Prints one line per broken invariant and a summary; exits 1 when any is
broken. Settings: DATABASE_URL, MINIO_*, REDIS_URL, SECRET_KEY.
`

// checkCmd runs `api check`.
func checkCmd(ctx context.Context, global, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("api check", flag.ContinueOnError)
	deep := fs.Bool("deep", false, "")
	grace := fs.Duration("grace", time.Minute, "")
	outboxAge := fs.Duration("outbox-age", time.Minute, "")
	envFile := fs.String("env-file", "", "")
	if help, err := config.ParseFlags(fs, args, "check", checkUsage, stdout); help || err != nil {
		return err
	}
	if *grace <= 0 || *outboxAge <= 0 {
		return errors.New("check: --grace and --outbox-age must be positive")
	}
	src, err := config.LoadCommand("api", global, *envFile, getenv, os.Stderr)
	if err != nil {
		return err
	}
	dbCfg, err := config.Database(src, "DATABASE_URL")
	if err != nil {
		return err
	}
	s3, err := config.ObjectStorage(src)
	if err != nil {
		return err
	}
	redisOpts, err := config.Redis(src)
	if err != nil {
		return err
	}
	secret, err := config.Secret(src)
	if err != nil {
		return err
	}
	sealer, err := cloudsync.NewSealer(secret)
	if err != nil {
		return &config.Error{Key: "SECRET_KEY", Problem: err.Error()}
	}
	blobs, err := blob.New(s3)
	if err != nil {
		return err
	}
	pool, err := store.Open(ctx, dbCfg)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	rdb := redis.NewClient(redisOpts)
	defer rdb.Close()

	rep, err := check.Run(ctx, check.Config{DB: pool, Blobs: blobs, Redis: rdb, Connector: cloudsync.NewConnector(sealer),
		Grace: *grace, OutboxAge: *outboxAge, Deep: *deep})
	if err != nil {
		return fmt.Errorf("check: %s", config.Redact(err.Error(), s3.SecretKey))
	}
	for _, f := range rep.Findings {
		fmt.Fprintln(stdout, f)
	}
	fmt.Fprintf(stdout, "checked %d documents %v, %d objects, %d audit links, %d events (%d duplicate deliveries on the streams): %d findings\n",
		rep.Documents, rep.ByStatus, rep.Objects, rep.Links, rep.Events, rep.Duplicates, len(rep.Findings))
	if len(rep.Findings) > 0 {
		return fmt.Errorf("%d invariants broken (listed above)", len(rep.Findings))
	}
	return nil
}
