// Package testenv gives tests isolated, real dependencies: a fresh migrated
// PostgreSQL database, a unique MinIO bucket and a unique Redis key prefix.
//
// `make test` starts the services and sets the DOCUVAULT_TEST_* variables;
// defaults match this project's development machine (PostgreSQL and Redis on
// loopback). Tests never share state: each database is a clone of a template
// migrated once per migration set, each bucket is new.
package testenv

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/dbinit"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/migrations"
)

// Roles used by every test database. They are cluster-wide, so tests share
// them (init-db serialises its changes with an advisory lock); their
// password is not a secret.
const (
	AppRole      = "dvtest_app"
	MigrateRole  = "dvtest_migrate"
	RolePassword = "dvtest-password"
)

// AdminURL is the superuser DSN tests provision with.
func AdminURL() string {
	return cmp.Or(os.Getenv("DOCUVAULT_TEST_ADMIN_URL"), "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
}

// RedisURL is the Redis server tests use.
func RedisURL() string {
	return cmp.Or(os.Getenv("DOCUVAULT_TEST_REDIS_URL"), "redis://127.0.0.1:6379/0")
}

// DB is one test's database.
type DB struct {
	Name       string
	AdminURL   string // superuser, connected to postgres
	MigrateURL string // DATABASE_MIGRATE_URL
	AppURL     string // DATABASE_URL
}

// RoleURL is the DSN of role (with RolePassword) for database name.
func RoleURL(role, name string) string {
	u, err := url.Parse(AdminURL())
	if err != nil {
		panic(err)
	}
	u.User = url.UserPassword(role, RolePassword)
	u.Path = "/" + name
	return u.String()
}

// Unique returns prefix followed by random hex, usable as a database,
// bucket or stream name.
func Unique(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Logger discards logs unless DOCUVAULT_TEST_LOG is set.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("DOCUVAULT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// AdminConn connects as the superuser to database name ("" for the admin
// DSN's own database).
func AdminConn(t testing.TB, name string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(AdminURL())
	if err != nil {
		t.Fatalf("DOCUVAULT_TEST_ADMIN_URL: %v", err)
	}
	if name != "" {
		cfg.Database = name
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to PostgreSQL as superuser (is it running? see README): %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Provision runs init-db for database name with the test roles.
func Provision(ctx context.Context, t testing.TB, name string) []dbinit.Change {
	t.Helper()
	plan := dbinit.Plan{
		Database: name,
		App:      dbinit.Role{Name: AppRole, Password: RolePassword},
		Migrate:  dbinit.Role{Name: MigrateRole, Password: RolePassword},
	}
	admin := AdminConn(t, "")
	changes, err := dbinit.Provision(ctx, admin, func(ctx context.Context, db string) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(AdminURL())
		if err != nil {
			return nil, err
		}
		cfg.Database = db
		return pgx.ConnectConfig(ctx, cfg)
	}, plan, Logger(t))
	if err != nil {
		t.Fatalf("init-db %s: %v", name, err)
	}
	return changes
}

// EmptyDB provisions a new database with init-db but applies no
// migration. It is dropped when the test ends.
func EmptyDB(t testing.TB) DB {
	t.Helper()
	ctx := context.Background()
	name := Unique("dvtest_")
	Provision(ctx, t, name)
	dropAtCleanup(t, name)
	return dbFor(name)
}

// NewDB returns a fresh, migrated database for one test, provisioned like
// production (owned by the migration role, DML only for the runtime role).
// It is dropped when the test ends.
func NewDB(t testing.TB) DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tpl := templateName(t)
	admin := AdminConn(t, "")
	// One lock for building and cloning the template: CREATE DATABASE fails
	// when another session is connected to the template.
	if _, err := admin.Exec(ctx, `select pg_advisory_lock(hashtext('docuvault-test-template'))`); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := admin.QueryRow(ctx, `select exists (select 1 from pg_database where datname = $1)`, tpl).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		buildTemplate(ctx, t, tpl)
	}
	name := Unique("dvtest_")
	_, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{tpl}.Sanitize()+" OWNER "+MigrateRole)
	if _, unlockErr := admin.Exec(ctx, `select pg_advisory_unlock(hashtext('docuvault-test-template'))`); unlockErr != nil {
		t.Fatal(unlockErr)
	}
	if err != nil {
		t.Fatalf("clone template %s: %v", tpl, err)
	}
	dropAtCleanup(t, name)
	// Database-level grants and settings are not copied from a template.
	Provision(ctx, t, name)
	return dbFor(name)
}

// templateName names the template after the migrations' content, so a
// changed migration builds a new template.
func templateName(t testing.TB) string {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return "dvtest_tpl_" + hex.EncodeToString(h.Sum(nil))[:16]
}

func buildTemplate(ctx context.Context, t testing.TB, tpl string) {
	t.Helper()
	building := tpl + "_building"
	admin := AdminConn(t, "")
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	Provision(ctx, t, building)
	conn, err := pgx.Connect(ctx, RoleURL(MigrateRole, building))
	if err != nil {
		t.Fatalf("connect as %s: %v", MigrateRole, err)
	}
	if _, err := store.Migrate(ctx, conn, migrations.FS, nil); err != nil {
		t.Fatalf("migrate template: %v", err)
	}
	conn.Close(ctx)
	// Renaming last makes the template appear whole or not at all.
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{tpl}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	// Templates of older migration sets are of no more use.
	rows, err := admin.Query(ctx, `select datname from pg_database where datname like 'dvtest\_tpl\_%' and datname <> $1`, tpl)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range stale {
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
}

func dropAtCleanup(t testing.TB, name string) {
	t.Cleanup(func() {
		if os.Getenv("DOCUVAULT_TEST_KEEP") != "" {
			t.Logf("keeping database %s", name)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg, err := pgx.ParseConfig(AdminURL())
		if err != nil {
			t.Error(err)
			return
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
}

func dbFor(name string) DB {
	return DB{
		Name:       name,
		AdminURL:   AdminURL(),
		MigrateURL: RoleURL(MigrateRole, name),
		AppURL:     RoleURL(AppRole, name),
	}
}

// Pool opens a pool on dsn as the binaries do (store.Open), closed when
// the test ends.
func Pool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// S3 returns the test MinIO server's settings with a new, empty bucket that
// is removed with its objects when the test ends. `make test` starts the
// server and sets DOCUVAULT_TEST_MINIO_*.
func S3(t testing.TB) config.S3 {
	t.Helper()
	endpoint := os.Getenv("DOCUVAULT_TEST_MINIO_ENDPOINT")
	if endpoint == "" {
		t.Fatal("DOCUVAULT_TEST_MINIO_ENDPOINT is not set: run the suite with `make test`, which starts MinIO")
	}
	cfg := config.S3{
		Endpoint:  config.Endpoint{HostPort: strings.TrimPrefix(endpoint, "http://")},
		AccessKey: os.Getenv("DOCUVAULT_TEST_MINIO_USER"),
		SecretKey: os.Getenv("DOCUVAULT_TEST_MINIO_PASSWORD"),
		Bucket:    Unique("dvtest-"),
	}
	store, err := blob.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := store.EnsureBucket(ctx); err != nil {
		t.Fatalf("create test bucket: %v", err)
	}
	t.Cleanup(func() {
		// Multi-object deletes of what is listed (a benchmark leaves tens
		// of thousands of objects).
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := store.Client()
		for res := range c.RemoveObjects(ctx, cfg.Bucket, c.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true}),
			minio.RemoveObjectsOptions{}) {
			t.Logf("remove %s from the test bucket: %v", res.ObjectName, res.Err)
		}
		if err := c.RemoveBucket(ctx, cfg.Bucket); err != nil {
			t.Errorf("remove test bucket %s: %v", cfg.Bucket, err)
		}
	})
	return cfg
}

// Env is a fake process environment for run functions.
type Env map[string]string

// Getenv looks key up in e.
func (e Env) Getenv(key string) string { return e[key] }

// With returns a copy of e with the given key/value pairs set.
func (e Env) With(kv ...string) Env {
	out := make(Env, len(e)+len(kv)/2)
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// ServiceEnv is the environment for running the binaries against db,
// bucket s3 and a leased Redis database on loopback, with every listener on
// a free port.
func ServiceEnv(t testing.TB, db DB, s3 config.S3) Env {
	return Env{
		"DATABASE_URL":         db.AppURL,
		"DATABASE_MIGRATE_URL": db.MigrateURL,
		"MINIO_ENDPOINT":       s3.Endpoint.HostPort,
		"MINIO_ROOT_USER":      s3.AccessKey,
		"MINIO_ROOT_PASSWORD":  s3.SecretKey,
		"MINIO_BUCKET":         s3.Bucket,
		"REDIS_URL":            Redis(t),
		"SECRET_KEY":           "test-secret-key-0123456789abcdef0123456789",
		"HTTP_ADDR":            "127.0.0.1:0",
		"METRICS_ADDR":         "127.0.0.1:0",
		"LOG_FORMAT":           "json",
		// Authentication is mandatory: tests sign in, often many times.
		"AUTH_REGISTRATION":              "open",
		"AUTH_ACCESS_TOKEN_TTL":          "1h", // the longest test (chaos) runs minutes
		"AUTH_LOGIN_RATE_PER_IP":         "100000/1m",
		"AUTH_LOGIN_RATE_PER_ACCOUNT":    "100000/1m",
		"AUTH_REGISTER_RATE_PER_IP":      "100000/1m",
		"AUTH_REGISTER_RATE_PER_ACCOUNT": "100000/1m",
		"AUTH_REFRESH_RATE_PER_IP":       "100000/1m",
		"AUTH_REFRESH_RATE_PER_ACCOUNT":  "100000/1m",
	}
}

// Describe is a one-line summary of db for failure messages.
func (db DB) String() string { return fmt.Sprintf("database %s", db.Name) }

// S3Settings are syntactically valid object storage settings that reach
// no server, for tests that stop before connecting.
func S3Settings() config.S3 {
	return config.S3{Endpoint: config.Endpoint{HostPort: "127.0.0.1:1"}, AccessKey: "user", SecretKey: "password", Bucket: "docuvault"}
}

// AdminDSN is the superuser DSN of db's database, for assertions that read
// what the runtime role may not (or should not need to).
func (db DB) AdminDSN() string {
	u, err := url.Parse(db.AdminURL)
	if err != nil {
		panic(err)
	}
	u.Path = "/" + db.Name
	return u.String()
}
