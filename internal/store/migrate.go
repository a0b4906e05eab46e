package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

// VersionTable is the table tern keeps the schema version in; the tern CLI's
// default, so the CLI and `api migrate` agree.
const VersionTable = "schema_version"

// MigrateResult says what Migrate did.
type MigrateResult struct {
	From, To int32 // schema version before and after
	Latest   int32 // highest migration in the set
}

// Migrate applies the migrations in fsys that the database behind conn has
// not applied yet, each in its own transaction, holding tern's advisory lock
// so concurrent runs wait for each other. Running it again changes nothing.
//
// When a migration fails, its transaction is rolled back: the database stays
// at the last version that succeeded, and the error names the failing file,
// the PostgreSQL message and the line where that is known.
func Migrate(ctx context.Context, conn *pgx.Conn, fsys fs.FS, onStart func(seq int32, name string)) (MigrateResult, error) {
	return MigrateWith(ctx, conn, fsys, onStart, nil)
}

// MigrateWith is Migrate, with unowned called just before the migration
// that requires owners (OwnerRequiredVersion), when it is still to apply:
// it gives the rows phase 1 left without an owner to a user, or deletes
// them (AdoptUnowned, DeleteUnowned). An error from it stops there, with
// the database at the version before. With unowned nil, that migration
// fails if any row still has no owner.
func MigrateWith(ctx context.Context, conn *pgx.Conn, fsys fs.FS, onStart func(seq int32, name string),
	unowned func(ctx context.Context, conn *pgx.Conn) error) (MigrateResult, error) {
	var res MigrateResult
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return res, fmt.Errorf("prepare migrations: %w", err)
	}
	if err := m.LoadMigrations(fsys); err != nil {
		return res, fmt.Errorf("load migrations: %w", err)
	}
	if len(m.Migrations) == 0 {
		return res, errors.New("load migrations: none found")
	}
	res.Latest = m.Migrations[len(m.Migrations)-1].Sequence
	if res.From, err = m.GetCurrentVersion(ctx); err != nil {
		return res, fmt.Errorf("read schema version: %w", err)
	}
	if res.From > res.Latest {
		return res, fmt.Errorf("database is at schema version %d, newer than this binary knows (%d): upgrade the binary", res.From, res.Latest)
	}
	if onStart != nil {
		m.OnStart = func(seq int32, name, _, _ string) { onStart(seq, name) }
	}
	var migrateErr error
	if unowned != nil && res.From < OwnerRequiredVersion && res.Latest >= OwnerRequiredVersion {
		if migrateErr = m.MigrateTo(ctx, OwnerRequiredVersion-1); migrateErr == nil {
			if err := unowned(ctx, conn); err != nil {
				res.To = OwnerRequiredVersion - 1
				return res, err
			}
		}
	}
	if migrateErr == nil {
		migrateErr = m.Migrate(ctx)
	}
	// Read the version back even on failure: it is what the database is at.
	if v, err := m.GetCurrentVersion(context.WithoutCancel(ctx)); err == nil {
		res.To = v
	}
	if migrateErr != nil {
		return res, describeMigrationError(migrateErr, res.To)
	}
	return res, nil
}

func describeMigrationError(err error, at int32) error {
	var mErr migrate.MigrationPgError
	if errors.As(err, &mErr) && mErr.PgError != nil {
		msg := fmt.Sprintf("migration %s failed: %s (SQLSTATE %s)", mErr.MigrationName, mErr.Message, mErr.Code)
		if mErr.Position > 0 && int(mErr.Position) <= len(mErr.Sql) {
			msg += fmt.Sprintf(" at line %d", lineOf(mErr.Sql, int(mErr.Position)))
		}
		return fmt.Errorf("%s; database left at schema version %d", msg, at)
	}
	return fmt.Errorf("migrate: %w; database left at schema version %d", err, at)
}

// lineOf returns the 1-based line of the 1-based character position pos.
func lineOf(sql string, pos int) int {
	line := 1
	for i, r := range []rune(sql) {
		if i+1 >= pos {
			break
		}
		if r == '\n' {
			line++
		}
	}
	return line
}
