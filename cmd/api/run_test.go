package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/testenv"
)

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestServeHealthReadinessAndMetrics(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, testenv.NewDB(t), testenv.S3(t))
	p := testenv.Start(t, run, nil, env)
	base := "http://" + p.Addr("api")

	if resp, body := get(t, base+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz: %d %s", resp.StatusCode, body)
	}
	resp, body := get(t, base+"/readyz")
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	var ready struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &ready); err != nil {
		t.Fatal(err)
	}
	for _, dep := range []string{"postgres", "redis", "object_storage"} {
		if ready.Checks[dep] != "ok" {
			t.Errorf("/readyz did not check %s: %s", dep, body)
		}
	}
	// The requests above are counted by route.
	if resp, body := get(t, base+"/metrics"); resp.StatusCode != 200 || !strings.Contains(body, "go_goroutines") ||
		!strings.Contains(body, `docuvault_http_requests_total{method="GET",route="/readyz",status="200"} 1`) {
		t.Errorf("/metrics: %d, no Go runtime metrics or request counts:\n%s", resp.StatusCode, body)
	}
	resp, body = get(t, base+"/no/such/route")
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, `"status":404`) {
		t.Errorf("unknown route: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("run returned %v after cancellation; want nil", err)
	}
}

func TestReadinessNamesTheFailedDependency(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: Redis is down.
	env := testenv.ServiceEnv(t, testenv.NewDB(t), testenv.S3(t)).With("REDIS_URL", "redis://127.0.0.1:1/0")
	p := testenv.Start(t, run, nil, env)
	resp, body := get(t, "http://"+p.Addr("api")+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with Redis down: %d %s; want 503", resp.StatusCode, body)
	}
	var prob struct {
		Type, Detail string
		Checks       map[string]string
	}
	if err := json.Unmarshal([]byte(body), &prob); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(prob.Detail, "redis") || prob.Checks["redis"] != "unavailable" || prob.Checks["postgres"] != "ok" {
		t.Errorf("/readyz problem does not name redis alone: %s", body)
	}
}

// Every bad setting stops start-up with one line that names the key.
func TestRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	good := testenv.Env{
		"DATABASE_URL":        "postgres://docuvault_app:pw@127.0.0.1:5432/docuvault",
		"MINIO_ENDPOINT":      "127.0.0.1:9000",
		"MINIO_ROOT_USER":     "u",
		"MINIO_ROOT_PASSWORD": "p",
		"REDIS_URL":           "redis://127.0.0.1:6379/0",
		"HTTP_ADDR":           "127.0.0.1:0",
		"SECRET_KEY":          "0123456789abcdef0123456789abcdef",
	}
	cases := []struct {
		name    string
		args    []string
		env     testenv.Env
		wantKey string
	}{
		{"no database", nil, good.With("DATABASE_URL", ""), "DATABASE_URL"},
		{"database not a URL", nil, good.With("DATABASE_URL", "host=x user=y"), "DATABASE_URL"},
		{"database without name", nil, good.With("DATABASE_URL", "postgres://u:p@127.0.0.1:5432/"), "DATABASE_URL"},
		{"database bad port", nil, good.With("DATABASE_URL", "postgres://u:p@127.0.0.1:99999999/db"), "DATABASE_URL"},
		{"redis scheme", nil, good.With("REDIS_URL", "http://127.0.0.1:6379"), "REDIS_URL"},
		{"redis bad db", nil, good.With("REDIS_URL", "redis://127.0.0.1:6379/abc"), "REDIS_URL"},
		{"no minio endpoint", nil, good.With("MINIO_ENDPOINT", ""), "MINIO_ENDPOINT"},
		{"minio endpoint without port", nil, good.With("MINIO_ENDPOINT", "localhost"), "MINIO_ENDPOINT"},
		{"minio endpoint with path", nil, good.With("MINIO_ENDPOINT", "http://127.0.0.1:9000/bucket"), "MINIO_ENDPOINT"},
		{"no minio user", nil, good.With("MINIO_ROOT_USER", ""), "MINIO_ROOT_USER"},
		{"no minio password", nil, good.With("MINIO_ROOT_PASSWORD", ""), "MINIO_ROOT_PASSWORD"},
		{"bucket name", nil, good.With("MINIO_BUCKET", "Not_A_Bucket"), "MINIO_BUCKET"},
		{"http addr", nil, good.With("HTTP_ADDR", "8080"), "HTTP_ADDR"},
		{"upload max negative", nil, good.With("UPLOAD_MAX_BYTES", "-1"), "UPLOAD_MAX_BYTES"},
		{"upload max words", nil, good.With("UPLOAD_MAX_BYTES", "100MB"), "UPLOAD_MAX_BYTES"},
		{"upload concurrency zero", nil, good.With("UPLOAD_CONCURRENCY_PER_CLIENT", "0"), "UPLOAD_CONCURRENCY_PER_CLIENT"},
		{"upload concurrency huge", nil, good.With("UPLOAD_CONCURRENCY_PER_CLIENT", "1000000"), "UPLOAD_CONCURRENCY_PER_CLIENT"},
		{"duplicate policy", nil, good.With("DUPLICATE_POLICY", "maybe"), "DUPLICATE_POLICY"},
		{"trusted proxy not an address", nil, good.With("TRUSTED_PROXIES", "127.0.0.1,proxy.example.org"), "TRUSTED_PROXIES"},
		{"trusted proxy host bits", nil, good.With("TRUSTED_PROXIES", "10.0.0.1/8"), "TRUSTED_PROXIES"},
		{"trusted proxies everyone", nil, good.With("TRUSTED_PROXIES", "0.0.0.0/0"), "TRUSTED_PROXIES"},
		{"no secret key", nil, good.With("SECRET_KEY", ""), "SECRET_KEY"},
		{"short secret key", nil, good.With("SECRET_KEY", "change-me"), "SECRET_KEY"},
		{"secret key one byte short", nil, good.With("SECRET_KEY", "0123456789abcdef0123456789abcde"), "SECRET_KEY"},
		{"registration mode", nil, good.With("AUTH_REGISTRATION", "invite"), "AUTH_REGISTRATION"},
		{"access token ttl words", nil, good.With("AUTH_ACCESS_TOKEN_TTL", "15 minutes"), "AUTH_ACCESS_TOKEN_TTL"},
		{"access token ttl too long", nil, good.With("AUTH_ACCESS_TOKEN_TTL", "48h"), "AUTH_ACCESS_TOKEN_TTL"},
		{"refresh token ttl too short", nil, good.With("AUTH_REFRESH_TOKEN_TTL", "10m"), "AUTH_REFRESH_TOKEN_TTL"},
		{"refresh token ttl under access", nil, good.With("AUTH_ACCESS_TOKEN_TTL", "2h", "AUTH_REFRESH_TOKEN_TTL", "1h"), "AUTH_REFRESH_TOKEN_TTL"},
		{"rate limit without period", nil, good.With("AUTH_LOGIN_RATE_PER_IP", "10"), "AUTH_LOGIN_RATE_PER_IP"},
		{"rate limit zero", nil, good.With("AUTH_REFRESH_RATE_PER_ACCOUNT", "0/1m"), "AUTH_REFRESH_RATE_PER_ACCOUNT"},
		{"rate limit period", nil, good.With("AUTH_REGISTER_RATE_PER_IP", "5/2d"), "AUTH_REGISTER_RATE_PER_IP"},
		{"log level", nil, good.With("LOG_LEVEL", "loud"), "LOG_LEVEL"},
		{"log format", nil, good.With("LOG_FORMAT", "xml"), "LOG_FORMAT"},
		{"migrate without its URL", []string{"migrate"}, good, "DATABASE_MIGRATE_URL"},
		{"init-db without admin URL", []string{"init-db"}, good.With("DATABASE_MIGRATE_URL", "postgres://m:p@127.0.0.1/docuvault"), "DATABASE_ADMIN_URL"},
		{"init-db, databases differ", []string{"init-db"}, good.With("DATABASE_ADMIN_URL", "postgres://postgres@127.0.0.1/postgres", "DATABASE_MIGRATE_URL", "postgres://m:p@127.0.0.1/other"), "DATABASE_MIGRATE_URL"},
		{"missing env file", []string{"--env-file", "/nonexistent/env"}, good, "--env-file"},
		{"unknown command", []string{"frobnicate"}, good, "unknown command"},
		{"unknown flag", []string{"--verbose"}, good, "command line"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out testenv.SyncBuffer
			err := run(context.Background(), c.args, c.env.Getenv, &out)
			if err == nil {
				t.Fatalf("started with a bad setting; log:\n%s", out.String())
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, c.wantKey) {
				t.Errorf("error %q does not start with %q", msg, c.wantKey)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
		})
	}
}

func TestUnknownKeyInEnvFileStopsStartup(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(path, []byte("DATABSE_URL=postgres://x:y@h/db\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"--env-file", path}, testenv.Env{}.Getenv, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "unknown setting DATABSE_URL") {
		t.Fatalf("error %v; want one naming the unknown key", err)
	}
}

// init-db and migrate, run as an operator would (through run, from an env
// file readable by others), provision a working database; running both
// again changes nothing; no password reaches the log.
func TestInitDBAndMigrateFromEnvFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	name := testenv.Unique("dvtest_")
	t.Cleanup(func() {
		admin := testenv.AdminConn(t, "")
		_, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	envFile := filepath.Join(t.TempDir(), "env")
	content := "DATABASE_ADMIN_URL=" + testenv.AdminURL() + "\n" +
		"DATABASE_URL=" + testenv.RoleURL(testenv.AppRole, name) + "\n" +
		"DATABASE_MIGRATE_URL=" + testenv.RoleURL(testenv.MigrateRole, name) + "\n"
	if err := os.WriteFile(envFile, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}

	var log testenv.SyncBuffer
	for _, cmd := range []string{"init-db", "migrate", "init-db", "migrate"} {
		if err := run(ctx, []string{"--env-file", envFile, cmd}, testenv.Env{}.Getenv, &log); err != nil {
			t.Fatalf("%s: %v\nlog:\n%s", cmd, err, log.String())
		}
	}
	out := log.String()
	if strings.Contains(out, testenv.RolePassword) {
		t.Errorf("a password appears in the log:\n%s", out)
	}
	if !strings.Contains(out, "accessible by group or others") {
		t.Errorf("no warning about a world-readable env file:\n%s", out)
	}
	if !strings.Contains(out, `"msg":"init-db done","process":"api","changes":0`) {
		t.Errorf("second init-db changed something:\n%s", out)
	}
	if !strings.Contains(out, `"msg":"schema up to date"`) {
		t.Errorf("second migrate did not report an up-to-date schema:\n%s", out)
	}
}

// Connection failures name the server but never the password.
func TestConnectionErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	const canary = "canary-pw-3f9a1c"
	env := testenv.ServiceEnv(t, testenv.DB{AppURL: "postgres://docuvault_app:" + canary + "@127.0.0.1:1/docuvault"},
		config.S3{Endpoint: config.Endpoint{HostPort: "127.0.0.1:1"}, AccessKey: "u", SecretKey: canary, Bucket: "docuvault"})
	cases := map[string][]string{"serve": nil, "migrate": {"migrate"}, "init-db": {"init-db"}}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			env := env.With(
				"DATABASE_MIGRATE_URL", "postgres://docuvault_migrate:"+canary+"@127.0.0.1:1/docuvault",
				"DATABASE_ADMIN_URL", "postgres://postgres:"+canary+"@127.0.0.1:1/postgres")
			var log testenv.SyncBuffer
			err := run(context.Background(), args, env.Getenv, &log)
			if err == nil {
				t.Fatal("connected to a closed port")
			}
			if strings.Contains(err.Error()+log.String(), canary) {
				t.Errorf("password leaked: error %q, log:\n%s", err, log.String())
			}
			if !strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("error %q does not name the server", err)
			}
		})
	}
	// A malformed URL is not echoed either.
	var log testenv.SyncBuffer
	err := run(context.Background(), nil, env.With("DATABASE_URL", "postgres://u:"+canary+"@127.0.0.1:notaport/db").Getenv, &log)
	if err == nil || strings.Contains(err.Error(), canary) {
		t.Errorf("malformed URL: error %v", err)
	}
}
