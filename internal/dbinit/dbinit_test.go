package dbinit_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/dbinit"
	"github.com/docuvault/docuvault/internal/testenv"
)

func TestProvisionTwiceIsNoOp(t *testing.T) {
	ctx := context.Background()
	db := testenv.EmptyDB(t) // provisions once
	before := testenv.Catalog(t, db.Name)

	changes := testenv.Provision(ctx, t, db.Name)
	if len(changes) != 0 {
		t.Fatalf("second init-db changed %v; want nothing", changes)
	}
	if after := testenv.Catalog(t, db.Name); after != before {
		t.Fatalf("catalog changed on second init-db:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestProvisionCreatesLeastPrivilegeSetup(t *testing.T) {
	db := testenv.EmptyDB(t)
	cat := testenv.Catalog(t, db.Name)
	for _, want := range []string{
		"role " + testenv.AppRole + " login=t super=f createdb=f createrole=f",
		"role " + testenv.MigrateRole + " login=t super=f createdb=f createrole=f",
		"database " + db.Name + " owner=" + testenv.MigrateRole,
		"settings={" + dbinit.AppRoleSetting + "=" + testenv.AppRole + "}",
		"schema public owner=" + testenv.MigrateRole,
	} {
		if !strings.Contains(cat, want) {
			t.Errorf("catalog lacks %q:\n%s", want, cat)
		}
	}
	// Passwords are stored as SCRAM verifiers, never in clear.
	if strings.Contains(cat, testenv.RolePassword) {
		t.Error("a role password appears in the catalog in clear")
	}
}

func TestProvisionRepairsDrift(t *testing.T) {
	ctx := context.Background()
	db := testenv.EmptyDB(t)
	admin := testenv.AdminConn(t, "")
	// Someone widened the database's privileges and made the app role powerful.
	for _, sql := range []string{
		"GRANT ALL ON DATABASE " + pgx.Identifier{db.Name}.Sanitize() + " TO PUBLIC",
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	changes := testenv.Provision(ctx, t, db.Name)
	if len(changes) == 0 {
		t.Fatal("init-db found nothing to repair after privileges were widened")
	}
	var publicCanConnect bool
	if err := admin.QueryRow(ctx, `select exists (select 1 from pg_database d, aclexplode(d.datacl) a
		where d.datname = $1 and a.grantee = 0)`, db.Name).Scan(&publicCanConnect); err != nil {
		t.Fatal(err)
	}
	if publicCanConnect {
		t.Error("PUBLIC still has privileges on the database after init-db")
	}
}

func TestPlanFromRejectsMismatchedSettings(t *testing.T) {
	parse := func(s string) *pgx.ConnConfig {
		c, err := pgx.ParseConfig(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name, app, migrate, wantKey string
	}{
		{"different databases", "postgres://a:p@h/one", "postgres://m:p@h/two", "DATABASE_MIGRATE_URL"},
		{"same user", "postgres://a:p@h/db", "postgres://a:p@h/db", "DATABASE_MIGRATE_URL"},
		{"no app password", "postgres://a@h/db", "postgres://m:p@h/db", "DATABASE_URL"},
		{"no migrate password", "postgres://a:p@h/db", "postgres://m@h/db", "DATABASE_MIGRATE_URL"},
		{"non-ASCII password", "postgres://a:p%C3%A4ss@h/db", "postgres://m:p@h/db", "DATABASE_URL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := dbinit.PlanFrom(parse(c.app), parse(c.migrate))
			if err == nil || !strings.HasPrefix(err.Error(), c.wantKey+":") {
				t.Fatalf("error %v; want one starting with %s:", err, c.wantKey)
			}
		})
	}
}

// A password PostgreSQL hashed itself must be recognised (no change), and a
// different one replaced: init-db compares SCRAM verifiers the way the
// server computes them, or it would set passwords nobody can log in with.
func TestProvisionRecognisesPasswordsHashedByPostgres(t *testing.T) {
	ctx := context.Background()
	admin := testenv.AdminConn(t, "")
	app, mig := testenv.Unique("dvtest_app_"), testenv.Unique("dvtest_mig_")
	dbName := testenv.Unique("dvtest_")
	const password = "correct horse battery staple"
	for _, sql := range []string{
		"SET password_encryption = 'scram-sha-256'",
		"CREATE ROLE " + app + " LOGIN PASSWORD '" + password + "'",
		"CREATE ROLE " + mig + " LOGIN PASSWORD '" + password + "'",
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)")
		_, _ = admin.Exec(ctx, "DROP ROLE IF EXISTS "+app)
		_, _ = admin.Exec(ctx, "DROP ROLE IF EXISTS "+mig)
	})
	connectTo := func(ctx context.Context, name string) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(testenv.AdminURL())
		if err != nil {
			return nil, err
		}
		cfg.Database = name
		return pgx.ConnectConfig(ctx, cfg)
	}
	provision := func(appPassword string) []dbinit.Change {
		plan := dbinit.Plan{Database: dbName, App: dbinit.Role{Name: app, Password: appPassword}, Migrate: dbinit.Role{Name: mig, Password: password}}
		changes, err := dbinit.Provision(ctx, admin, connectTo, plan, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		return changes
	}
	for _, c := range provision(password) {
		if strings.Contains(string(c), "password") {
			t.Fatalf("init-db reset a password PostgreSQL had hashed from the same text: %q", c)
		}
	}
	changes := provision("a different password")
	if !slices.Contains(changes, dbinit.Change("set password of role "+app)) {
		t.Fatalf("changing the password in DATABASE_URL did not update the role; changes: %v", changes)
	}
	if changes := provision("a different password"); len(changes) != 0 {
		t.Fatalf("third run changed %v; want nothing", changes)
	}
}
