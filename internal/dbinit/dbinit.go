// Package dbinit provisions DocuVault's database and its two least-privilege
// roles with a superuser connection: the runtime role (DML only) and the
// migration role (owns the schema, runs DDL).
//
// Everything it does is idempotent: it reads the catalog first and changes
// only what differs, so a second run changes nothing.
package dbinit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
)

// AppRoleSetting is the database setting in which init-db records the
// runtime role's name, so that migrations can narrow its grants (for
// example keep audit_log append-only) without hard-coding the name.
const AppRoleSetting = "docuvault.app_role"

// lockKey serialises concurrent init-db runs on one cluster (roles are
// cluster-wide, and concurrent ALTER ROLE fails with "tuple concurrently
// updated").
const lockKey = 0x646f6375_7661756c // "docuvaul"

// Role is a login role and its password.
type Role struct {
	Name     string
	Password string
}

// Plan is what to provision: a database, owned by Migrate, that App may
// only read and write rows in.
type Plan struct {
	Database string
	App      Role
	Migrate  Role
}

// PlanFrom derives the plan from the runtime and migration connection
// settings. Both must name the same database, different users, and a
// password each. Errors name the setting at fault.
func PlanFrom(app, migrate *pgx.ConnConfig) (Plan, error) {
	p := Plan{
		Database: app.Database,
		App:      Role{Name: app.User, Password: app.Password},
		Migrate:  Role{Name: migrate.User, Password: migrate.Password},
	}
	switch {
	case migrate.Database != app.Database:
		return p, fmt.Errorf("DATABASE_MIGRATE_URL: names database %q but DATABASE_URL names %q; they must be the same", migrate.Database, app.Database)
	case app.User == migrate.User:
		return p, fmt.Errorf("DATABASE_MIGRATE_URL: uses the same user %q as DATABASE_URL; the runtime and migration roles must differ", app.User)
	case app.Password == "":
		return p, errors.New("DATABASE_URL: has no password; init-db sets the role's password from it")
	case migrate.Password == "":
		return p, errors.New("DATABASE_MIGRATE_URL: has no password; init-db sets the role's password from it")
	case !isASCII(app.Password):
		return p, errors.New("DATABASE_URL: the password must be ASCII (init-db sends it as a SCRAM verifier; use e.g. openssl rand -hex 24)")
	case !isASCII(migrate.Password):
		return p, errors.New("DATABASE_MIGRATE_URL: the password must be ASCII (init-db sends it as a SCRAM verifier; use e.g. openssl rand -hex 24)")
	}
	return p, nil
}

// Change is one thing Provision changed, for the log.
type Change string

// Provision creates or updates the roles and the database of plan through
// admin, a connection as a superuser to any database of the cluster, and
// connectTo, which opens a superuser connection to the named database. It
// returns what it changed; an empty list means the cluster already matched.
func Provision(ctx context.Context, admin *pgx.Conn, connectTo func(ctx context.Context, database string) (*pgx.Conn, error), plan Plan, log *slog.Logger) ([]Change, error) {
	var super bool
	if err := admin.QueryRow(ctx, `select rolsuper from pg_roles where rolname = current_user`).Scan(&super); err != nil {
		return nil, fmt.Errorf("DATABASE_ADMIN_URL: check role: %w", err)
	}
	if !super {
		return nil, errors.New("DATABASE_ADMIN_URL: must connect as a superuser (for example postgres)")
	}
	if adminUser := admin.Config().User; adminUser == plan.App.Name || adminUser == plan.Migrate.Name {
		return nil, fmt.Errorf("DATABASE_ADMIN_URL: user %q is also a DocuVault role; use a separate superuser", adminUser)
	}

	if _, err := admin.Exec(ctx, `select pg_advisory_lock($1)`, int64(lockKey)); err != nil {
		return nil, fmt.Errorf("take init-db lock: %w", err)
	}
	defer admin.Exec(context.WithoutCancel(ctx), `select pg_advisory_unlock($1)`, int64(lockKey)) //nolint:errcheck // the session ends soon anyway

	var changes []Change
	record := func(c string) {
		changes = append(changes, Change(c))
		log.Info("init-db changed", "change", c)
	}

	for _, r := range []Role{plan.Migrate, plan.App} {
		if err := ensureRole(ctx, admin, r, record); err != nil {
			return changes, err
		}
	}
	if err := ensureDatabase(ctx, admin, plan, record); err != nil {
		return changes, err
	}

	conn, err := connectTo(ctx, plan.Database)
	if err != nil {
		return changes, fmt.Errorf("connect to database %q as admin: %w", plan.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := ensureSchemaPrivileges(ctx, conn, plan, record); err != nil {
		return changes, err
	}
	return changes, nil
}

// roleAttributes are the attributes both roles get: they can log in and do
// nothing cluster-wide.
const roleAttributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"

func ensureRole(ctx context.Context, admin *pgx.Conn, r Role, record func(string)) error {
	ident := pgx.Identifier{r.Name}.Sanitize()
	var (
		exists                                           bool
		login, super, createDB, createRole, repl, bypass bool
		inherit                                          bool
		stored                                           *string
	)
	err := admin.QueryRow(ctx, `
		select rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit, rolpassword
		from pg_authid where rolname = $1`, r.Name).
		Scan(&login, &super, &createDB, &createRole, &repl, &bypass, &inherit, &stored)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		exists = false
	case err != nil:
		return fmt.Errorf("read role %s: %w", r.Name, err)
	default:
		exists = true
	}

	pw, err := passwordClause(r.Password)
	if err != nil {
		return err
	}
	if !exists {
		if _, err := admin.Exec(ctx, "CREATE ROLE "+ident+" "+roleAttributes+" PASSWORD "+pw); err != nil {
			return fmt.Errorf("create role %s: %w", r.Name, err)
		}
		record("created role " + r.Name)
		return nil
	}
	if !login || super || createDB || createRole || repl || bypass || !inherit {
		if _, err := admin.Exec(ctx, "ALTER ROLE "+ident+" "+roleAttributes); err != nil {
			return fmt.Errorf("alter role %s: %w", r.Name, err)
		}
		record("reset attributes of role " + r.Name)
	}
	if stored == nil || !scramMatches(*stored, r.Password) {
		if _, err := admin.Exec(ctx, "ALTER ROLE "+ident+" PASSWORD "+pw); err != nil {
			return fmt.Errorf("set password of role %s: %w", r.Name, err)
		}
		record("set password of role " + r.Name)
	}
	return nil
}

// passwordClause is the SQL literal for a role's password: its SCRAM
// verifier, computed here, so the password never appears in a statement
// (PlanFrom accepts ASCII passwords only, for which PostgreSQL's SASLprep
// changes nothing).
func passwordClause(password string) (string, error) {
	v, err := scramVerifier(password, nil, scramIterations)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return quoteLiteral(v), nil
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func ensureDatabase(ctx context.Context, admin *pgx.Conn, plan Plan, record func(string)) error {
	db := pgx.Identifier{plan.Database}.Sanitize()
	var owner string
	var publicConnect, appConnect, appTemp, appCreate bool
	var setting *string
	err := admin.QueryRow(ctx, `
		select pg_get_userbyid(d.datdba),
		       (d.datacl is null or exists (select 1 from aclexplode(d.datacl) a where a.grantee = 0)),
		       has_database_privilege($2, d.oid, 'CONNECT'),
		       has_database_privilege($2, d.oid, 'TEMP'),
		       has_database_privilege($2, d.oid, 'CREATE'),
		       (select s from pg_db_role_setting r, unnest(r.setconfig) s
		         where r.setdatabase = d.oid and r.setrole = 0 and s like $3)
		from pg_database d where d.datname = $1`,
		plan.Database, plan.App.Name, AppRoleSetting+"=%").
		Scan(&owner, &publicConnect, &appConnect, &appTemp, &appCreate, &setting)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// CREATE DATABASE cannot run in a transaction; Exec of one statement
		// is not wrapped in one.
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+db+" OWNER "+pgx.Identifier{plan.Migrate.Name}.Sanitize()+" ENCODING 'UTF8' TEMPLATE template0"); err != nil {
			return fmt.Errorf("create database %s: %w", plan.Database, err)
		}
		record("created database " + plan.Database)
		owner, publicConnect, appConnect, appTemp, appCreate = plan.Migrate.Name, true, true, true, false
	case err != nil:
		return fmt.Errorf("read database %s: %w", plan.Database, err)
	}

	if owner != plan.Migrate.Name {
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" OWNER TO "+pgx.Identifier{plan.Migrate.Name}.Sanitize()); err != nil {
			return fmt.Errorf("give database %s to %s: %w", plan.Database, plan.Migrate.Name, err)
		}
		record("made " + plan.Migrate.Name + " owner of database " + plan.Database)
	}
	// Only the two roles may connect, and the runtime role may not create
	// schemas or temporary tables.
	if publicConnect || appTemp || appCreate {
		if _, err := admin.Exec(ctx, "REVOKE ALL ON DATABASE "+db+" FROM PUBLIC, "+pgx.Identifier{plan.App.Name}.Sanitize()); err != nil {
			return fmt.Errorf("revoke database privileges: %w", err)
		}
		record("revoked PUBLIC and runtime-role privileges on database " + plan.Database)
		appConnect = false
	}
	if !appConnect {
		if _, err := admin.Exec(ctx, "GRANT CONNECT ON DATABASE "+db+" TO "+pgx.Identifier{plan.App.Name}.Sanitize()); err != nil {
			return fmt.Errorf("grant connect: %w", err)
		}
		record("granted CONNECT on database " + plan.Database + " to " + plan.App.Name)
	}
	want := AppRoleSetting + "=" + plan.App.Name
	if setting == nil || *setting != want {
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" SET "+AppRoleSetting+" = "+quoteLiteral(plan.App.Name)); err != nil {
			return fmt.Errorf("record runtime role: %w", err)
		}
		record("set " + want + " on database " + plan.Database)
	}
	return nil
}

func ensureSchemaPrivileges(ctx context.Context, conn *pgx.Conn, plan Plan, record func(string)) error {
	app := pgx.Identifier{plan.App.Name}.Sanitize()
	migrate := pgx.Identifier{plan.Migrate.Name}.Sanitize()

	var owner string
	var publicCreate, appCreate, appUsage, defaults bool
	err := conn.QueryRow(ctx, `
		select pg_get_userbyid(n.nspowner),
		       exists (select 1 from aclexplode(n.nspacl) a where a.grantee = 0 and a.privilege_type = 'CREATE'),
		       has_schema_privilege($1, n.oid, 'CREATE'),
		       has_schema_privilege($1, n.oid, 'USAGE'),
		       exists (select 1 from pg_default_acl d, aclexplode(d.defaclacl) a
		               where d.defaclrole = to_regrole($2) and d.defaclnamespace = n.oid
		                 and d.defaclobjtype = 'r' and a.grantee = to_regrole($1)
		                 and a.privilege_type = 'DELETE')
		from pg_namespace n where n.nspname = 'public'`,
		plan.App.Name, plan.Migrate.Name).
		Scan(&owner, &publicCreate, &appCreate, &appUsage, &defaults)
	if err != nil {
		return fmt.Errorf("read schema public: %w", err)
	}
	if owner != plan.Migrate.Name {
		if _, err := conn.Exec(ctx, "ALTER SCHEMA public OWNER TO "+migrate); err != nil {
			return fmt.Errorf("give schema public to %s: %w", plan.Migrate.Name, err)
		}
		record("made " + plan.Migrate.Name + " owner of schema public")
	}
	if publicCreate || appCreate {
		if _, err := conn.Exec(ctx, "REVOKE CREATE ON SCHEMA public FROM PUBLIC, "+app); err != nil {
			return fmt.Errorf("revoke create on schema public: %w", err)
		}
		record("revoked CREATE on schema public")
	}
	if !appUsage {
		if _, err := conn.Exec(ctx, "GRANT USAGE ON SCHEMA public TO "+app); err != nil {
			return fmt.Errorf("grant usage on schema public: %w", err)
		}
		record("granted USAGE on schema public to " + plan.App.Name)
	}
	if !defaults {
		// Tables and sequences the migration role creates, now or in later
		// migrations, are usable by the runtime role for DML only (no
		// TRUNCATE, REFERENCES or TRIGGER). Migrations narrow this further
		// where needed (audit_log is append-only).
		stmts := []string{
			"ALTER DEFAULT PRIVILEGES FOR ROLE " + migrate + " IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO " + app,
			"ALTER DEFAULT PRIVILEGES FOR ROLE " + migrate + " IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO " + app,
		}
		for _, s := range stmts {
			if _, err := conn.Exec(ctx, s); err != nil {
				return fmt.Errorf("set default privileges: %w", err)
			}
		}
		record("granted DML on future tables of " + plan.Migrate.Name + " to " + plan.App.Name)
	}
	return nil
}
