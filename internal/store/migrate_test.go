package store_test

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
	"github.com/docuvault/docuvault/migrations"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestMigrateTwiceIsNoOp(t *testing.T) {
	ctx := context.Background()
	db := testenv.EmptyDB(t)
	conn := connect(t, db.MigrateURL)

	first, err := store.Migrate(ctx, conn, migrations.FS, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.From != 0 || first.To != first.Latest || first.Latest < 1 {
		t.Fatalf("first migrate: %+v; want 0 -> latest", first)
	}
	before := testenv.Catalog(t, db.Name)

	var applied []string
	second, err := store.Migrate(ctx, conn, migrations.FS, func(_ int32, name string) { applied = append(applied, name) })
	if err != nil {
		t.Fatal(err)
	}
	if second.From != second.To || len(applied) != 0 {
		t.Fatalf("second migrate applied %v (%+v); want nothing", applied, second)
	}
	if after := testenv.Catalog(t, db.Name); after != before {
		t.Fatalf("catalog changed on second migrate:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// withExtra returns the real migrations plus extra files.
func withExtra(t *testing.T, extra map[string]string) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := fs.ReadFile(migrations.FS, e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = &fstest.MapFile{Data: b}
	}
	for name, sql := range extra {
		out[name] = &fstest.MapFile{Data: []byte(sql)}
	}
	return out
}

func TestFailedMigrationLeavesPreviousVersion(t *testing.T) {
	ctx := context.Background()
	db := testenv.EmptyDB(t)
	conn := connect(t, db.MigrateURL)

	good, err := store.Migrate(ctx, conn, migrations.FS, nil)
	if err != nil {
		t.Fatal(err)
	}
	brokenName := fmt.Sprintf("%03d_half_done.sql", good.Latest+1)
	broken := withExtra(t, map[string]string{
		brokenName: "create table half_done (id int);\n\nselect no_such_column\n  from half_done;\n",
	})
	res, err := store.Migrate(ctx, conn, broken, nil)
	if err == nil {
		t.Fatal("a broken migration succeeded")
	}
	msg := err.Error()
	for _, want := range []string{
		brokenName, "no_such_column", "at line 3",
		fmt.Sprintf("left at schema version %d", good.To),
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if res.To != good.To {
		t.Errorf("schema version %d after failure; want %d", res.To, good.To)
	}
	var exists bool
	if err := conn.QueryRow(ctx, `select to_regclass('half_done') is not null`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("the failed migration's first statement was not rolled back")
	}
}
