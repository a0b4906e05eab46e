package testenv

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Catalog describes, as sorted text, everything init-db and migrate
// control for database name: the test roles (attributes and password
// verifiers), the database's owner, ACL and settings, and inside it every
// schema, table, column, constraint, index, default privilege and the
// schema version. Equal snapshots mean nothing changed.
func Catalog(t testing.TB, name string) string {
	t.Helper()
	ctx := context.Background()
	var lines []string
	conns := map[string]*pgx.Conn{}
	query := func(dbName, sql string, args ...any) {
		conn, ok := conns[dbName]
		if !ok {
			conn = AdminConn(t, dbName)
			conns[dbName] = conn
		}
		rows, err := conn.Query(ctx, sql, args...)
		if err != nil {
			t.Fatalf("catalog query: %v", err)
		}
		defer rows.Close()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}

	query("", `select format('role %s login=%s super=%s createdb=%s createrole=%s inherit=%s password=%s',
			rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolpassword)
		from pg_authid where rolname in ($1, $2)`, AppRole, MigrateRole)
	query("", `select format('database %s owner=%s acl=%s settings=%s', d.datname, pg_get_userbyid(d.datdba), d.datacl,
			(select array_agg(s order by s) from pg_db_role_setting r, unnest(r.setconfig) s where r.setdatabase = d.oid))
		from pg_database d where d.datname = $1`, name)
	query(name, `select format('schema %s owner=%s acl=%s', nspname, pg_get_userbyid(nspowner), nspacl)
		from pg_namespace where nspname not like 'pg\_%' and nspname <> 'information_schema'`)
	query(name, `select format('default-acl role=%s schema=%s type=%s acl=%s', pg_get_userbyid(defaclrole),
			defaclnamespace::regnamespace, defaclobjtype, defaclacl) from pg_default_acl`)
	query(name, `select format('relation %s kind=%s owner=%s acl=%s', c.oid::regclass, c.relkind, pg_get_userbyid(c.relowner), c.relacl)
		from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public'`)
	query(name, `select format('column %s.%s %s notnull=%s default=%s', c.oid::regclass, a.attname,
			format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
		from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
		left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
		where n.nspname = 'public' and a.attnum > 0 and not a.attisdropped and c.relkind = 'r'`)
	query(name, `select format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
		from pg_constraint where connamespace = 'public'::regnamespace`)
	query(name, `select format('index %s', pg_get_indexdef(indexrelid)) from pg_index i
		join pg_class c on c.oid = i.indrelid where c.relnamespace = 'public'::regnamespace`)
	var hasVersion bool
	if err := conns[name].QueryRow(ctx, `select to_regclass('schema_version') is not null`).Scan(&hasVersion); err != nil {
		t.Fatal(err)
	}
	if hasVersion {
		query(name, `select format('schema_version %s', version) from schema_version`)
	}

	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
