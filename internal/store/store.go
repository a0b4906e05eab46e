// Package store is DocuVault's PostgreSQL layer: the connection pool, the
// transaction helper, migrations and the SQL the processes run.
//
// Driver errors are translated here, once: callers see ErrNotFound and
// ErrConflict, never pgx.ErrNoRows or a raw unique violation.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	// ErrNotFound means the row asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a unique or exclusion constraint refused the write.
	ErrConflict = errors.New("conflict")
)

// Open connects a pool with cfg and checks that the server answers. Its
// connections encode uuids directly (RegisterUUID) unless cfg has an
// AfterConnect of its own.
// The returned error names the server (without password) on failure.
func Open(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	if cfg.AfterConnect == nil {
		cfg.AfterConnect = RegisterUUID
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, translate(err))
	}
	return pool, nil
}

// Beginner starts transactions; *pgxpool.Pool, *pgx.Conn and pgx.Tx are
// Beginners.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// WithTx runs fn in a transaction and commits it when fn returns nil. It
// rolls back otherwise, even when ctx is already cancelled.
func WithTx(ctx context.Context, db Beginner, fn func(tx pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return translate(err)
	}
	if err := fn(tx); err != nil {
		// A cancelled ctx must not stop the rollback from reaching the server.
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	return translate(tx.Commit(ctx))
}

// translate maps driver errors to the store's sentinel errors.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505", "23P01": // unique_violation, exclusion_violation
			return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
		}
	}
	return err
}

// DBTX is what single statements need: a pool, a connection or a
// transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}
