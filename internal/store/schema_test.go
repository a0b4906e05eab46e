package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/docuvault/docuvault/internal/testenv"
)

var v1Tables = []string{
	"users", "refresh_tokens", "quotas", "documents", "topics", "folders",
	"shares", "audit_log", "cloud_connections", "groups", "group_members",
	"outbox", "processed_events",
}

func TestSchemaHasEveryTableWithKeys(t *testing.T) {
	db := testenv.NewDB(t)
	conn := connect(t, db.AppURL)
	ctx := context.Background()

	for _, table := range v1Tables {
		var hasPK bool
		err := conn.QueryRow(ctx, `select exists (select 1 from pg_constraint
			where conrelid = to_regclass($1) and contype = 'p')`, table).Scan(&hasPK)
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if !hasPK {
			t.Errorf("table %s is missing or has no primary key", table)
		}
	}

	nullable := func(table, column string) bool {
		t.Helper()
		var isNullable string
		err := conn.QueryRow(ctx, `select is_nullable from information_schema.columns
			where table_schema = 'public' and table_name = $1 and column_name = $2`, table, column).Scan(&isNullable)
		if err != nil {
			t.Fatalf("%s.%s: %v", table, column, err)
		}
		return isNullable == "YES"
	}
	// Everything has an owner (migration 013).
	for _, col := range [][2]string{{"documents", "user_id"}, {"topics", "user_id"}, {"folders", "user_id"}, {"cloud_connections", "user_id"},
		{"documents", "status"}, {"documents", "sha256"}, {"documents", "size_bytes"}, {"outbox", "payload"}, {"audit_log", "action"}} {
		if nullable(col[0], col[1]) {
			t.Errorf("%s.%s must be NOT NULL", col[0], col[1])
		}
	}

	// Foreign keys, including something that references groups.
	for _, fk := range [][2]string{
		{"documents", "users"}, {"documents", "topics"}, {"documents", "folders"},
		{"shares", "groups"}, {"group_members", "groups"}, {"group_members", "users"},
		{"refresh_tokens", "users"}, {"quotas", "users"}, {"cloud_connections", "users"},
		{"folders", "folders"},
	} {
		var ok bool
		err := conn.QueryRow(ctx, `select exists (select 1 from pg_constraint
			where contype = 'f' and conrelid = to_regclass($1) and confrelid = to_regclass($2))`, fk[0], fk[1]).Scan(&ok)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("no foreign key from %s to %s", fk[0], fk[1])
		}
	}

	// Ids are UUIDs and times are timestamptz everywhere.
	rows, err := conn.Query(ctx, `select table_name, column_name, data_type from information_schema.columns
		where table_schema = 'public' and table_name = any($1)
		  and ((column_name = 'id' and table_name not in ('audit_log', 'outbox') and data_type <> 'uuid')
		    or (column_name like '%\_at' and data_type <> 'timestamp with time zone'))`, v1Tables)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var table, column, typ string
		if err := rows.Scan(&table, &column, &typ); err != nil {
			t.Fatal(err)
		}
		t.Errorf("%s.%s has type %s", table, column, typ)
	}
	rows.Close()

	// The outbox is a queue (the relay deletes what it publishes), its
	// payload kept as written, and audit rows carry whole envelopes.
	var cols []string
	if err := conn.QueryRow(ctx, `select array_agg(table_name || '.' || column_name || ':' || data_type order by table_name, column_name)
		from information_schema.columns where table_schema = 'public'
		  and ((table_name = 'outbox' and column_name in ('published_at', 'attempts', 'payload'))
		    or (table_name = 'audit_log' and column_name = 'causation_id'))`).Scan(&cols); err != nil {
		t.Fatal(err)
	}
	if want := []string{"audit_log.causation_id:uuid", "outbox.payload:json"}; !slices.Equal(cols, want) {
		t.Errorf("outbox and audit columns %v; want %v", cols, want)
	}
}

// insertDocument inserts a pending document of owner (nil: none) with the
// given status and size and returns the error, if any.
func insertDocument(ctx context.Context, conn testenv.Execer, owner *uuid.UUID, status string, size int64, sha []byte) error {
	id := uuid.Must(uuid.NewV7())
	_, err := conn.Exec(ctx, `insert into documents (id, user_id, filename, content_type, size_bytes, sha256, status, storage_key)
		values ($1, $2, 'a.pdf', 'application/pdf', $3, $4, $5, $6)`, id, owner, size, sha, status, "staging/"+id.String())
	return err
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func TestSchemaConstraintsRefuseBadRows(t *testing.T) {
	db := testenv.NewDB(t)
	conn := connect(t, db.AppURL)
	ctx := context.Background()
	sha := make([]byte, 32)
	owner := testenv.User(t, conn, "")

	if err := insertDocument(ctx, conn, &owner, "pending", 10, sha); err != nil {
		t.Fatalf("a valid document was refused: %v", err)
	}
	for name, err := range map[string]error{
		"unknown status":      insertDocument(ctx, conn, &owner, "lost", 10, sha),
		"negative size":       insertDocument(ctx, conn, &owner, "pending", -1, sha),
		"short sha256":        insertDocument(ctx, conn, &owner, "pending", 10, sha[:31]),
		"rejected, no reason": insertDocument(ctx, conn, &owner, "rejected", 10, sha),
	} {
		if got := sqlState(err); got != "23514" { // check_violation
			t.Errorf("%s: got %v (SQLSTATE %q); want a check violation", name, err, got)
		}
	}
	// Owners are required (migration 013).
	if err := insertDocument(ctx, conn, nil, "pending", 10, sha); sqlState(err) != "23502" { // not_null_violation
		t.Errorf("unowned document: got %v (SQLSTATE %q); want a not-null violation", err, sqlState(err))
	}
}

func TestAppRoleHasDMLOnly(t *testing.T) {
	db := testenv.NewDB(t)
	conn := connect(t, db.AppURL)
	ctx := context.Background()

	// Ordinary DML on documents works.
	owner := testenv.User(t, conn, "")
	if err := insertDocument(ctx, conn, &owner, "pending", 1, make([]byte, 32)); err != nil {
		t.Fatalf("insert document as app role: %v", err)
	}
	for _, sql := range []string{
		`update documents set title = 'renamed'`,
		`select count(*) from documents`,
		`delete from documents`,
		`insert into audit_log (actor_type, action, aggregate_type, aggregate_id) values ('anonymous', 'test', 'document', gen_random_uuid())`,
		`select count(*) from audit_log`,
		`insert into audit_chain (seq, audit_id, hash) values (1, 1, sha256(''))`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Errorf("app role could not run %q: %v", sql, err)
		}
	}

	// Nothing else: no DDL, no temp tables, no rewriting history.
	for _, sql := range []string{
		`create table intruder (id int)`,
		`create temporary table intruder (id int)`,
		`create schema intruder`,
		`create function intruder() returns int language sql as 'select 1'`,
		`alter table documents add column intruder int`,
		`drop table documents`,
		`truncate documents`,
		`update audit_log set action = 'tampered'`,
		`delete from audit_log`,
		`truncate audit_log`,
		`update audit_chain set hash = hash`,
		`delete from audit_chain`,
		`truncate audit_chain`,
		`update schema_version set version = 0`,
	} {
		_, err := conn.Exec(ctx, sql)
		if got := sqlState(err); got != "42501" { // insufficient_privilege
			t.Errorf("app role ran %q: err %v (SQLSTATE %q); want permission denied", sql, err, got)
		}
	}
}
