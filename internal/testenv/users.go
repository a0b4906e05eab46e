package testenv

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Execer runs a statement: a *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

var _ Execer = (pgx.Tx)(nil)

// User inserts an active user without a password (it cannot log in) with
// email, or "<id>@example.org" when email is empty, through db (the admin
// pool: the runtime role may too), and returns its id. Everything a test
// stores has an owner (migration 013): this is one.
func User(t testing.TB, db Execer, email string) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	if email == "" {
		email = id.String() + "@example.org"
	}
	if _, err := db.Exec(context.Background(), `insert into users (id, email) values ($1, $2)`, id, email); err != nil {
		t.Fatalf("insert user %s: %v", email, err)
	}
	return id
}
