package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// root is the repository root, where docker-compose.yml, .env.example,
// the Dockerfile and go.mod are.
const root = ".."

func TestCompose(t *testing.T) {
	t.Parallel()
	for _, problem := range checkCompose(context.Background(), root) {
		t.Error(problem)
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	for _, problem := range checkDockerfile(root) {
		t.Error(problem)
	}
}

func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	for _, problem := range checkUnits(filepath.Join(root, "deploy", "systemd")) {
		t.Error(problem)
	}
}

// deployFiles are the files the checks read, relative to the root.
var deployFiles = []string{
	"docker-compose.yml", ".env.example", "Dockerfile", ".dockerignore", "go.mod",
	"deploy/systemd/docuvault-api.service",
	"deploy/systemd/docuvault-relay@.service",
	"deploy/systemd/docuvault-consumer.service",
	"deploy/systemd/docuvault-migrate.service",
}

// mutation breaks one file on purpose: it replaces the first occurrence of
// old after the first occurrence of after ("" for the file's start).
type mutation struct {
	name, file, after, old, new string
	// remove deletes the file instead.
	remove bool
	// want is part of the problem the checks must then report.
	want string
}

var mutations = []mutation{
	// docker-compose.yml
	{name: "service missing", file: "docker-compose.yml", old: "\n  consumer:\n", new: "\n  worker:\n", want: "services: missing consumer"},
	{name: "relay single", file: "docker-compose.yml", old: "replicas: 2", new: "replicas: 1", want: "relay: replicas"},
	{name: "no healthcheck", file: "docker-compose.yml", after: "\n  redis:\n", old: "test: [\"CMD-SHELL\", \"test \\\"$$(redis-cli ping)\\\" = PONG\"]", new: "test: [\"NONE\"]", want: "redis: healthcheck: none"},
	{name: "no restart", file: "docker-compose.yml", after: "x-docuvault-service", old: "restart: unless-stopped", new: "restart: \"no\"", want: "relay: restart"},
	{name: "one-shot restarts", file: "docker-compose.yml", after: "\n  migrate:\n", old: "restart: \"no\"", new: "restart: always", want: "migrate: restart"},
	{name: "dependency started only", file: "docker-compose.yml", after: "\n  relay:\n", old: "condition: service_completed_successfully", new: "condition: service_started", want: "relay: depends_on init-db: condition service_started"},
	{name: "dependency missing", file: "docker-compose.yml", after: "\n  api:\n", old: "      redis:\n        condition: service_healthy\n", new: "", want: "api: depends_on redis: missing"},
	{name: "data store published", file: "docker-compose.yml", after: "\n  redis:\n", old: "    networks: [backend]\n", new: "    ports: [\"6379:6379\"]\n    networks: [backend]\n", want: "redis: publishes"},
	{name: "api published publicly", file: ".env.example", old: "HTTP_ADDR=127.0.0.1:8080", new: "HTTP_ADDR=0.0.0.0:8080", want: "want a loopback address"},
	{name: "api port mismatch", file: "docker-compose.yml", old: "HTTP_ADDR: 0.0.0.0:8080", new: "HTTP_ADDR: 0.0.0.0:8081", want: "api: ports: target 8080"},
	{name: "bind mount", file: "docker-compose.yml", old: "- pgdata:/var/lib/postgresql/data", new: "- ./pgdata:/var/lib/postgresql/data", want: "postgres: volume at /var/lib/postgresql/data is bind"},
	{name: "undocumented variable", file: "docker-compose.yml", old: "LOG_LEVEL: ${LOG_LEVEL:-}", new: "LOG_LEVEL: ${LOG_VERBOSITY:-}", want: "${LOG_VERBOSITY} is not in .env.example"},
	{name: "commented variable without default", file: "docker-compose.yml", old: "LOG_FORMAT: ${LOG_FORMAT:-}", new: "LOG_FORMAT: ${LOG_FORMAT}", want: "${LOG_FORMAT} is commented out"},
	{name: "key gone from .env.example", file: ".env.example", old: "\nSECRET_KEY=change-me\n", new: "\n", want: "${SECRET_KEY} is not in .env.example"},
	{name: "bare variable", file: "docker-compose.yml", old: "MINIO_BUCKET: ${MINIO_BUCKET:-}", new: "MINIO_BUCKET: $MINIO_BUCKET", want: "bare or malformed reference"},
	{name: "literal secret", file: "docker-compose.yml", after: "\n  api:\n", old: "SECRET_KEY: ${SECRET_KEY:?set SECRET_KEY in .env}", new: "SECRET_KEY: 0123456789abcdef0123456789abcdef", want: "api: secret SECRET_KEY"},
	{name: "secret default", file: "docker-compose.yml", after: "\n  minio:\n", old: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in .env}", new: "${MINIO_ROOT_PASSWORD:-minioadmin}", want: "minio: secret MINIO_ROOT_PASSWORD"},
	{name: "password in a URL", file: "docker-compose.yml", old: "postgres://postgres@127.0.0.1", new: "postgres://postgres:hunter2@127.0.0.1", want: "literal password in a URL"},
	{name: "setting typo", file: "docker-compose.yml", old: "CLAIM_AFTER: ${CLAIM_AFTER:-}", new: "CLAIM_AFTR: ${CLAIM_AFTER:-}", want: "consumer: environment: CLAIM_AFTR is no DocuVault setting"},
	{name: "setting missing", file: "docker-compose.yml", after: "\n  consumer:\n", old: "      SECRET_KEY: ${SECRET_KEY:?set SECRET_KEY in .env}\n", new: "", want: "consumer: environment: missing SECRET_KEY"},
	{name: "setting not forwarded", file: "docker-compose.yml", old: "      AUTH_REGISTRATION: ${AUTH_REGISTRATION:-}\n", new: "", want: "api: environment: AUTH_REGISTRATION is not forwarded"},
	{name: "commented setting not forwarded", file: "docker-compose.yml", old: "      AUTH_ACCESS_TOKEN_TTL: ${AUTH_ACCESS_TOKEN_TTL:-}\n", new: "", want: "api: environment: AUTH_ACCESS_TOKEN_TTL is not forwarded"},
	{name: "relay setting not forwarded", file: "docker-compose.yml", old: "      STREAM_RETENTION: ${STREAM_RETENTION:-}\n", new: "", want: "relay: environment: STREAM_RETENTION is not forwarded"},
	{name: "wrong command", file: "docker-compose.yml", old: "command: [\"api\", \"migrate\"]", new: "command: [\"api\", \"serve\"]", want: "migrate: command"},
	{name: "probe on the wrong port", file: "docker-compose.yml", old: "http://127.0.0.1:9102/readyz", new: "http://127.0.0.1:9101/readyz", want: "consumer: healthcheck probes"},
	{name: "writable root", file: "docker-compose.yml", old: "  read_only: true\n", new: "", want: "api: read_only is not set"},
	{name: "capabilities kept", file: "docker-compose.yml", old: "cap_drop: [ALL]", new: "cap_drop: [NET_RAW]", want: "cap_drop does not drop ALL"},
	{name: "short grace period", file: "docker-compose.yml", old: "stop_grace_period: 45s", new: "stop_grace_period: 10s", want: "relay: stop_grace_period"},
	{name: "redis without AOF", file: "docker-compose.yml", old: "\"--appendonly\", \"yes\"", new: "\"--appendonly\", \"no\"", want: "redis: append-only file not enabled"},
	{name: "minio unpinned", file: "docker-compose.yml", old: "minio/minio:RELEASE.2025-09-07T16-13-09Z", new: "minio/minio:latest", want: "minio: image \"minio/minio:latest\" is not pinned"},
	{name: "data store with a route out", file: "docker-compose.yml", old: "    internal: true\n", new: "", want: "postgres: network backend is not internal"},
	{name: "registry image", file: "docker-compose.yml", old: "  image: docuvault:local\n  build: .\n", new: "  image: ghcr.io/example/docuvault:latest\n", want: "api: image \"ghcr.io/example/docuvault:latest\" is not built from this checkout"},
	// Dockerfile and .dockerignore
	{name: "root image", file: "Dockerfile", old: "USER 65532:65532", new: "USER root", want: "Dockerfile: USER: the final stage runs as \"root\""},
	{name: "no user", file: "Dockerfile", old: "USER 65532:65532\n", new: "", want: "Dockerfile: USER: the final stage sets no user"},
	{name: "cgo", file: "Dockerfile", old: "CGO_ENABLED=0 ", new: "", want: "lacks CGO_ENABLED=0"},
	{name: "local paths", file: "Dockerfile", old: "-trimpath ", new: "", want: "lacks -trimpath"},
	{name: "no probe", file: "Dockerfile", old: " ./deploy/healthcheck", new: "", want: "lacks ./deploy/healthcheck"},
	{name: "old Go", file: "Dockerfile", old: "FROM golang:1.26.8-bookworm", new: "FROM golang:1.25.3-bookworm", want: "older than go.mod's go"},
	{name: "single stage", file: "Dockerfile", old: "FROM gcr.io/distroless/static-debian12:nonroot\nCOPY --from=build /out/ /usr/local/bin/\n", new: "", want: "multi-stage"},
	{name: "secrets in the build context", file: ".dockerignore", old: "\n.env\n", new: "\n", want: ".dockerignore: .env is not excluded"},
	// systemd units
	{name: "unit missing", file: "deploy/systemd/docuvault-consumer.service", remove: true, want: "docuvault-consumer.service: missing"},
	{name: "systemd reads the env file", file: "deploy/systemd/docuvault-consumer.service", old: "[Service]", new: "[Service]\nEnvironmentFile=/etc/docuvault/env", want: "docuvault-consumer.service: EnvironmentFile="},
	{name: "new privileges", file: "deploy/systemd/docuvault-api.service", old: "NoNewPrivileges=yes", new: "NoNewPrivileges=no", want: "docuvault-api.service: NoNewPrivileges="},
	{name: "writable system", file: "deploy/systemd/docuvault-consumer.service", old: "ProtectSystem=strict", new: "ProtectSystem=full", want: "docuvault-consumer.service: ProtectSystem="},
	{name: "capability", file: "deploy/systemd/docuvault-relay@.service", old: "CapabilityBoundingSet=\n", new: "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", want: "docuvault-relay@.service: CapabilityBoundingSet="},
	{name: "any address family", file: "deploy/systemd/docuvault-relay@.service", old: "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n", new: "", want: "docuvault-relay@.service: RestrictAddressFamilies="},
	{name: "system calls", file: "deploy/systemd/docuvault-migrate.service", old: "SystemCallFilter=@system-service", new: "SystemCallFilter=@system-service @mount", want: "docuvault-migrate.service: SystemCallFilter="},
	{name: "home visible", file: "deploy/systemd/docuvault-api.service", old: "ProtectHome=yes", new: "ProtectHome=no", want: "docuvault-api.service: ProtectHome="},
	{name: "root user", file: "deploy/systemd/docuvault-api.service", old: "User=docuvault", new: "User=root", want: "docuvault-api.service: User="},
	{name: "no restart on failure", file: "deploy/systemd/docuvault-api.service", old: "Restart=on-failure", new: "Restart=no", want: "docuvault-api.service: Restart="},
	{name: "killed while draining", file: "deploy/systemd/docuvault-consumer.service", old: "TimeoutStopSec=45s", new: "TimeoutStopSec=10s", want: "docuvault-consumer.service: TimeoutStopSec="},
	{name: "no env file", file: "deploy/systemd/docuvault-relay@.service", old: " --env-file /etc/docuvault/env", new: "", want: "docuvault-relay@.service: ExecStart="},
	{name: "bucket not created", file: "deploy/systemd/docuvault-migrate.service", old: "ExecStart=/usr/local/bin/api --env-file /etc/docuvault/env init-bucket\n", new: "", want: "docuvault-migrate.service: ExecStart="},
	{name: "metrics clash", file: "deploy/systemd/docuvault-relay@.service", old: "Environment=METRICS_ADDR=127.0.0.1:%i", new: "Environment=METRICS_ADDR=127.0.0.1:9102", want: "METRICS_ADDR"},
	{name: "started before migrations", file: "deploy/systemd/docuvault-consumer.service", old: "Requires=docuvault-migrate.service\n", new: "", want: "docuvault-consumer.service: Requires= lacks docuvault-migrate.service"},
	{name: "not a unit", file: "deploy/systemd/docuvault-api.service", old: "[Service]\n", new: "[Service]\nnonsense\n", want: "docuvault-api.service: line"},
}

// Every check above can fail: each mutation breaks a copy of the files and
// the checks must say what broke.
func TestChecksCatchBreakage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for _, name := range deployFiles {
				data, err := os.ReadFile(filepath.Join(root, name))
				if err != nil {
					t.Fatal(err)
				}
				if name == m.file {
					if m.remove {
						continue
					}
					data = []byte(mutate(t, string(data), m))
				}
				path := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got := slices.Concat(checkCompose(ctx, dir), checkDockerfile(dir), checkUnits(filepath.Join(dir, "deploy", "systemd")))
			for _, problem := range got {
				if strings.Contains(problem, m.want) {
					t.Logf("reported: %s", problem)
					return
				}
			}
			t.Errorf("broken %s (%s) not reported as %q; reported:\n%s", m.file, m.name, m.want, strings.Join(got, "\n"))
		})
	}
}

// mutate applies m to text, failing the test when the text to replace is
// gone (the mutation must be updated with the file, not skipped).
func mutate(t *testing.T, text string, m mutation) string {
	t.Helper()
	start := strings.Index(text, m.after)
	if start < 0 {
		t.Fatalf("%s: %q not found", m.file, m.after)
	}
	i := strings.Index(text[start:], m.old)
	if i < 0 {
		t.Fatalf("%s: %q not found after %q", m.file, m.old, m.after)
	}
	i += start
	return text[:i] + m.new + text[i+len(m.old):]
}
