package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// The running relay chains what is recorded, and `relay audit verify`
// says so; after a superuser edits an audit row, it exits with one line
// naming the link.
func TestAuditVerifyCommand(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	env := testenv.ServiceEnv(t, db, testenv.S3(t))
	testenv.Start(t, run, nil, env)
	pool := testenv.Pool(t, db.AppURL)
	ctx := context.Background()
	for range 3 {
		ev := testenv.SampleEvent(t)
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return store.Record(ctx, tx, ev, store.Origin{}) }); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var links int
		if err := pool.QueryRow(ctx, `select count(*) from audit_chain`).Scan(&links); err != nil {
			t.Fatal(err)
		}
		if links == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 audit rows chained by the relay after 30s", links)
		}
		time.Sleep(50 * time.Millisecond)
	}

	var out, errOut bytes.Buffer
	if err := audit(ctx, nil, []string{"verify"}, env.Getenv, &out, &errOut); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !strings.HasPrefix(out.String(), "audit chain intact: 3 links verified (1 to 3), head ") {
		t.Errorf("verify printed %q", out.String())
	}

	if _, err := testenv.AdminConn(t, db.Name).Exec(ctx, `update audit_log set user_agent = 'edited' where id = (select audit_id from audit_chain where seq = 2)`); err != nil {
		t.Fatal(err)
	}
	err := run(ctx, []string{"audit", "verify", "--since", "1h"}, env.Getenv, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "audit chain broken at link 2 (audit row ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("verify after an edit: %v; want one line naming link 2", err)
	}
}

func TestAuditRefusesBadArguments(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, testenv.DB{AppURL: "postgres://u:p@127.0.0.1:1/docuvault"}, testenv.S3Settings())
	for args, want := range map[string]string{
		"audit check":                    `audit: unknown command "check"`,
		"audit verify --since yesterday": `--since "yesterday" is neither`,
		"audit verify --grace -1m":       "--grace -1m0s must not be negative",
		"audit verify extra":             `unexpected argument "extra"`,
		"audit verify --bogus":           "flag provided but not defined: -bogus",
	} {
		err := run(context.Background(), strings.Fields(args), env.Getenv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v; want %q", args, err, want)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"audit", "help"}, env.Getenv, &out); err != nil || !strings.Contains(out.String(), "usage: relay audit verify") {
		t.Errorf("help: %v %q", err, out.String())
	}
}
