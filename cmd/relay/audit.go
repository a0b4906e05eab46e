package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
)

const auditUsage = `usage: relay audit verify [--since T] [--grace D]

Recomputes the audit chain (docs/events.md, "Audit chain") and reports the
first broken link: an audit row changed or deleted after it was chained, a
link missing, or a row inserted behind the chain. T is RFC 3339 or an age
(90m, 2h, 7d): verification starts at the link of the first row at or after
T, trusting the link before it. Rows younger than --grace (default 15m) may
not be chained yet and are not reported. Exits 0 when the chain holds, 1
with one line naming the break otherwise. Settings: DATABASE_URL.
`

// audit runs `relay audit verify`.
func audit(ctx context.Context, global, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
		_, _ = io.WriteString(stdout, auditUsage)
		return nil
	}
	if args[0] != "verify" {
		return fmt.Errorf("audit: unknown command %q (see `relay audit help`)", args[0])
	}
	fs := flag.NewFlagSet("relay audit verify", flag.ContinueOnError)
	sinceRaw := fs.String("since", "", "")
	grace := fs.Duration("grace", 15*time.Minute, "")
	envFile := fs.String("env-file", "", "")
	if help, err := config.ParseFlags(fs, args[1:], "audit verify", auditUsage, stdout); help || err != nil {
		return err
	}
	if *grace < 0 {
		return fmt.Errorf("--grace %s must not be negative", *grace)
	}
	since, err := parseTime("--since", *sinceRaw, time.Now())
	if err != nil {
		return err
	}
	src, err := config.LoadCommand("relay", global, *envFile, getenv, stderr)
	if err != nil {
		return err
	}
	dbCfg, err := config.Database(src, "DATABASE_URL")
	if err != nil {
		return err
	}
	pool, err := store.Open(ctx, dbCfg)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()

	last := time.Now()
	rep, err := relay.VerifyChain(ctx, pool, since, *grace, func(n int64) {
		if time.Since(last) >= time.Second {
			fmt.Fprintf(stderr, "verified %d links\n", n)
			last = time.Now()
		}
	})
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	if rep.Break != nil {
		return rep.Break
	}
	if rep.Links == 0 {
		fmt.Fprintln(stdout, "audit chain: no link to verify")
		return nil
	}
	fmt.Fprintf(stdout, "audit chain intact: %d links verified (%d to %d), head %s\n",
		rep.Links, rep.From, rep.Head.Seq, hex.EncodeToString(rep.Head.Hash[:]))
	return nil
}
