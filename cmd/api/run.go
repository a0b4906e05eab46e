package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/docuvault/docuvault/internal/config"
)

const usage = `usage: api [--env-file PATH] [command]

commands:
  serve        serve the HTTP API (default)
  init-db      create or update the database and its two roles (needs DATABASE_ADMIN_URL)
  migrate      apply the embedded schema migrations (DATABASE_MIGRATE_URL); phase 1
               data without an owner needs --unowned-owner EMAIL or --unowned-delete
  init-bucket  create the object storage bucket unless it exists
  check        check the system's invariants once it is quiet ("api check --help")
  users        users create: add an account ("api users --help"; the first is an administrator)

Settings come from the environment and the env file (default /etc/docuvault/env
when it exists); .env.example documents every key.
`

// run is the whole api process: it reads the configuration once, then runs
// the command named in args until it ends or ctx is cancelled.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if global, rest, ok := config.SplitCommand(args, "check"); ok {
		return checkCmd(ctx, global, rest, getenv, stdout)
	}
	if global, rest, ok := config.SplitCommand(args, "users"); ok {
		return usersCmd(ctx, global, rest, getenv, stdout)
	}
	if global, rest, ok := config.SplitCommand(args, "migrate"); ok {
		return migrateCmd(ctx, global, rest, getenv, stdout)
	}
	cmd, rest, src, err := config.Load("api", args, getenv)
	if errors.Is(err, flag.ErrHelp) || cmd == "help" {
		_, _ = io.WriteString(stdout, usage)
		return nil
	}
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("unexpected argument %q (see `api help`)", rest[0])
	}
	log, err := config.Logger(src, stdout)
	if err != nil {
		return err
	}
	for _, w := range src.Warnings {
		log.Warn(w)
	}
	log = log.With("process", "api")
	config.RedisLogs(log)

	switch cmd {
	case "", "serve":
		cfg, err := loadServeConfig(src)
		if err != nil {
			return err
		}
		err = serve(ctx, log, cfg)
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil // stopped while starting: a shutdown, not a failure
		}
		return err
	case "init-db":
		return initDB(ctx, log, src)
	case "init-bucket":
		return initBucket(ctx, log, src)
	default:
		return fmt.Errorf("unknown command %q (see `api help`)", cmd)
	}
}
