package deploy_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/httpserver"
)

// The stack's services by role.
var (
	dataStores = []string{"postgres", "redis", "minio"}
	oneShots   = []string{"init-db", "migrate", "init-bucket"}
	// longRunning are the services with a health check and a restart
	// policy: the data stores and DocuVault's three processes.
	longRunning = []string{"postgres", "redis", "minio", "api", "relay", "consumer"}
)

const (
	healthy   = "service_healthy"
	completed = "service_completed_successfully"
)

// serviceSpec is what a service running the DocuVault image must have.
type serviceSpec struct {
	command   []string
	dependsOn map[string]string // service -> condition
	env       []string          // keys its command needs
	// reads is every setting its command reads (cmd/api, cmd/relay,
	// cmd/consumer and the readers in internal/config they call, logging
	// included): each one .env.example documents must be in its
	// environment, or setting it in .env would silently do nothing.
	// Every key of internal/config.Keys is read by some service here
	// (TestSettingsClassified): a new setting must be placed.
	reads     []string
	listenKey string // the address its health probe targets ("" for one-shots)
}

// Settings several commands read.
var (
	logSettings   = []string{"LOG_LEVEL", "LOG_FORMAT"}
	minioSettings = []string{"MINIO_ENDPOINT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_BUCKET"}
	quotaSettings = []string{"QUOTA_DEFAULT_BYTES", "QUOTA_DEFAULT_DOCUMENTS"}
	authSettings  = []string{"AUTH_REGISTRATION", "AUTH_ACCESS_TOKEN_TTL", "AUTH_REFRESH_TOKEN_TTL",
		"AUTH_LOGIN_RATE_PER_IP", "AUTH_LOGIN_RATE_PER_ACCOUNT",
		"AUTH_REGISTER_RATE_PER_IP", "AUTH_REGISTER_RATE_PER_ACCOUNT",
		"AUTH_REFRESH_RATE_PER_IP", "AUTH_REFRESH_RATE_PER_ACCOUNT"}
)

var specs = map[string]serviceSpec{
	"init-db": {
		command:   []string{"api", "init-db"},
		dependsOn: map[string]string{"postgres": healthy},
		env:       []string{"DATABASE_ADMIN_URL", "DATABASE_URL", "DATABASE_MIGRATE_URL"},
		reads:     slices.Concat([]string{"DATABASE_ADMIN_URL", "DATABASE_URL", "DATABASE_MIGRATE_URL"}, logSettings),
	},
	"migrate": {
		command:   []string{"api", "migrate"},
		dependsOn: map[string]string{"postgres": healthy, "init-db": completed},
		env:       []string{"DATABASE_MIGRATE_URL"},
		reads:     slices.Concat([]string{"DATABASE_MIGRATE_URL"}, logSettings),
	},
	"init-bucket": {
		command:   []string{"api", "init-bucket"},
		dependsOn: map[string]string{"minio": healthy},
		env:       []string{"MINIO_ENDPOINT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
		reads:     slices.Concat(minioSettings, logSettings),
	},
	"api": {
		command: []string{"api"},
		dependsOn: map[string]string{"postgres": healthy, "redis": healthy, "minio": healthy,
			"init-db": completed, "migrate": completed, "init-bucket": completed},
		env: []string{"DATABASE_URL", "REDIS_URL", "MINIO_ENDPOINT", "MINIO_ROOT_USER",
			"MINIO_ROOT_PASSWORD", "SECRET_KEY", "HTTP_ADDR"},
		reads: slices.Concat([]string{"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "HTTP_ADDR",
			"UPLOAD_MAX_BYTES", "UPLOAD_CONCURRENCY_PER_CLIENT", "TRUSTED_PROXIES", "DUPLICATE_POLICY"},
			minioSettings, quotaSettings, authSettings, logSettings),
		listenKey: "HTTP_ADDR",
	},
	// The relay touches neither MinIO nor the bucket.
	"relay": {
		command: []string{"relay"},
		dependsOn: map[string]string{"postgres": healthy, "redis": healthy,
			"init-db": completed, "migrate": completed},
		env:       []string{"DATABASE_URL", "REDIS_URL", "METRICS_ADDR"},
		reads:     slices.Concat([]string{"DATABASE_URL", "REDIS_URL", "METRICS_ADDR", "STREAM_RETENTION"}, logSettings),
		listenKey: "METRICS_ADDR",
	},
	"consumer": {
		command: []string{"consumer"},
		dependsOn: map[string]string{"postgres": healthy, "redis": healthy, "minio": healthy,
			"init-db": completed, "migrate": completed, "init-bucket": completed},
		env: []string{"DATABASE_URL", "REDIS_URL", "MINIO_ENDPOINT", "MINIO_ROOT_USER",
			"MINIO_ROOT_PASSWORD", "SECRET_KEY", "METRICS_ADDR"},
		reads: slices.Concat([]string{"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "METRICS_ADDR", "CLAIM_AFTER"},
			minioSettings, quotaSettings, logSettings),
		listenKey: "METRICS_ADDR",
	},
}

// namedVolumes: where each data store keeps its data.
var namedVolumes = map[string]struct{ volume, target string }{
	"postgres": {"pgdata", "/var/lib/postgresql/data"},
	"redis":    {"redisdata", "/data"},
	"minio":    {"miniodata", "/data"},
}

// envExample is .env.example: the keys it sets, and the keys it documents
// (set, or commented out as "#KEY=value").
type envExample struct {
	set        map[string]string
	documented map[string]bool
}

var envKeyRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

func parseEnvExample(text string) envExample {
	env := envExample{set: map[string]string{}, documented: map[string]bool{}}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		commented := strings.HasPrefix(line, "#")
		line = strings.TrimSpace(strings.TrimPrefix(line, "#"))
		key, value, ok := strings.Cut(line, "=")
		if !ok || !envKeyRE.MatchString(key) {
			continue
		}
		env.documented[key] = true
		if !commented {
			env.set[key] = value
		}
	}
	return env
}

// problems collects what a check found wrong, one line each, starting with
// the service or file at fault.
type problems []string

func (p *problems) addf(format string, args ...any) {
	*p = append(*p, fmt.Sprintf(format, args...))
}

// loadProject loads dir/docker-compose.yml as `docker compose` would with
// dir/.env.example as its .env (the process environment is left out).
func loadProject(ctx context.Context, dir string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir),
		cli.WithEnvFiles(filepath.Join(dir, ".env.example")),
		cli.WithDotEnv,
	)
	if err != nil {
		return nil, err
	}
	return cli.ProjectFromOptions(ctx, opts)
}

// loadRawModel loads dir/docker-compose.yml without interpolation: every
// ${VAR} is still there, anchors and merge keys are resolved, comments gone.
func loadRawModel(ctx context.Context, dir string) (map[string]any, error) {
	path := filepath.Join(dir, "docker-compose.yml")
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return loader.LoadModelWithContext(ctx, types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: path, Content: content}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SkipInterpolation = true
		o.SkipNormalization = true
		o.SkipValidation = true
		o.SkipConsistencyCheck = true
		o.SetProjectName("docuvault", true)
	})
}

// checkCompose checks dir/docker-compose.yml against dir/.env.example.
func checkCompose(ctx context.Context, dir string) []string {
	var p problems
	envText, err := os.ReadFile(filepath.Join(dir, ".env.example"))
	if err != nil {
		return []string{err.Error()}
	}
	env := parseEnvExample(string(envText))
	raw, err := loadRawModel(ctx, dir)
	if err != nil {
		return []string{"load (raw): " + err.Error()}
	}
	checkReferences(&p, raw, env)
	checkLiteralSecrets(&p, raw)

	project, err := loadProject(ctx, dir)
	if err != nil {
		return append(p, "load: "+err.Error())
	}
	checkServices(&p, project)
	checkHealthAndRestart(&p, project)
	checkDependencies(&p, project)
	checkPorts(&p, project, env)
	checkVolumes(&p, project)
	checkImages(&p, project, dir)
	checkDocuVaultServices(&p, project)
	checkForwarded(&p, project, env)
	checkDataStores(&p, project)
	return p
}

func checkServices(p *problems, project *types.Project) {
	want := slices.Concat(dataStores, oneShots, []string{"api", "relay", "consumer"})
	for _, name := range want {
		if _, ok := project.Services[name]; !ok {
			p.addf("services: missing %s", name)
		}
	}
	for name := range project.Services {
		if !slices.Contains(want, name) {
			p.addf("services: unexpected %s (add it to this test with its expectations)", name)
		}
	}
	if relay, ok := project.Services["relay"]; ok && relay.GetScale() != 2 {
		p.addf("relay: replicas = %d, want 2 (a leader and a standby)", relay.GetScale())
	}
}

// checkHealthAndRestart: long-running services have a real health check
// and restart; one-shots never restart (a restarting job never completes).
func checkHealthAndRestart(p *problems, project *types.Project) {
	for _, name := range longRunning {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		hc := s.HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
			p.addf("%s: healthcheck: none", name)
		}
		switch s.Restart {
		case types.RestartPolicyAlways, types.RestartPolicyUnlessStopped, types.RestartPolicyOnFailure:
		default:
			if !strings.HasPrefix(s.Restart, types.RestartPolicyOnFailure+":") {
				p.addf("%s: restart: %q, want unless-stopped, always or on-failure", name, s.Restart)
			}
		}
	}
	for _, name := range oneShots {
		if s, ok := project.Services[name]; ok && s.Restart != "" && s.Restart != types.RestartPolicyNo {
			p.addf("%s: restart: %q on a one-shot job, want no", name, s.Restart)
		}
	}
}

func checkDependencies(p *problems, project *types.Project) {
	for name, spec := range specs {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		for dep, condition := range spec.dependsOn {
			got, ok := s.DependsOn[dep]
			switch {
			case !ok:
				p.addf("%s: depends_on %s: missing (want %s)", name, dep, condition)
			case got.Condition != condition:
				p.addf("%s: depends_on %s: condition %s, want %s", name, dep, got.Condition, condition)
			case !got.Required:
				p.addf("%s: depends_on %s: not required", name, dep)
			}
		}
	}
}

// checkPorts: only the API is published, on HTTP_ADDR's host from
// .env.example, which must be loopback (the API serves plain HTTP, bearer
// tokens included: a TLS proxy in front exposes it).
func checkPorts(p *problems, project *types.Project, env envExample) {
	for name, s := range project.Services {
		if s.NetworkMode == "host" {
			p.addf("%s: network_mode host publishes every port", name)
		}
		if name != "api" && len(s.Ports) > 0 {
			p.addf("%s: publishes %v; only the api may publish a port", name, s.Ports)
		}
	}
	api, ok := project.Services["api"]
	if !ok {
		return
	}
	if len(api.Ports) != 1 {
		p.addf("api: ports: %d published, want 1", len(api.Ports))
		return
	}
	port := api.Ports[0]
	wantHost, wantPort, _ := net.SplitHostPort(env.set["HTTP_ADDR"])
	if port.HostIP != wantHost || port.Published != wantPort {
		p.addf("api: ports: published on %s:%s, want HTTP_ADDR from .env.example (%s)", port.HostIP, port.Published, env.set["HTTP_ADDR"])
	}
	if ip := net.ParseIP(port.HostIP); ip == nil || !ip.IsLoopback() {
		p.addf("api: ports: published on %q by default, want a loopback address", port.HostIP)
	}
	_, listenPort, _ := net.SplitHostPort(value(api.Environment, "HTTP_ADDR"))
	if fmt.Sprint(port.Target) != listenPort {
		p.addf("api: ports: target %d but HTTP_ADDR listens on port %s", port.Target, listenPort)
	}
}

func checkVolumes(p *problems, project *types.Project) {
	for name, want := range namedVolumes {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		if _, declared := project.Volumes[want.volume]; !declared {
			p.addf("volumes: %s is not declared as a named volume", want.volume)
		}
		found := false
		for _, v := range s.Volumes {
			if v.Target == want.target {
				found = true
				if v.Type != types.VolumeTypeVolume || v.Source != want.volume {
					p.addf("%s: volume at %s is %s %q, want the named volume %s", name, want.target, v.Type, v.Source, want.volume)
				}
			}
		}
		if !found {
			p.addf("%s: volume: nothing mounted at %s", name, want.target)
		}
	}
}

// checkImages: the data stores' images are pinned (MinIO to one release:
// its upstream publishes no more), DocuVault's is built from this checkout.
func checkImages(p *problems, project *types.Project, dir string) {
	for _, name := range dataStores {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		tag := imageTag(s.Image)
		if tag == "" || tag == "latest" {
			p.addf("%s: image %q is not pinned to a tag or digest", name, s.Image)
		}
		if name == "minio" && !strings.HasPrefix(tag, "RELEASE.") && !strings.HasPrefix(tag, "sha256:") {
			p.addf("minio: image %q: pin one release (RELEASE.…) or a digest", s.Image)
		}
	}
	abs, _ := filepath.Abs(dir)
	for name := range specs {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		if s.Build == nil || filepath.Clean(s.Build.Context) != abs {
			p.addf("%s: image %q is not built from this checkout's Dockerfile", name, s.Image)
		}
	}
}

// imageTag returns the tag or digest of an image reference ("" if none).
func imageTag(ref string) string {
	if _, digest, ok := strings.Cut(ref, "@"); ok {
		return digest
	}
	slash := strings.LastIndex(ref, "/")
	if colon := strings.LastIndex(ref, ":"); colon > slash {
		return ref[colon+1:]
	}
	return ""
}

// checkDocuVaultServices: the right command, settings a binary knows (a
// typo would be ignored silently), the settings it needs, a health probe on
// its own listen address, hardening and a graceful stop.
func checkDocuVaultServices(p *problems, project *types.Project) {
	for name, spec := range specs {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		if !slices.Equal(s.Command, spec.command) {
			p.addf("%s: command %q, want %q", name, s.Command, spec.command)
		}
		for key := range s.Environment {
			if !slices.Contains(config.Keys, key) {
				p.addf("%s: environment: %s is no DocuVault setting (known: internal/config.Keys)", name, key)
			}
		}
		for _, key := range spec.env {
			if value(s.Environment, key) == "" {
				p.addf("%s: environment: missing %s", name, key)
			}
		}
		if !s.ReadOnly {
			p.addf("%s: read_only is not set", name)
		}
		if !slices.Contains(s.CapDrop, "ALL") {
			p.addf("%s: cap_drop does not drop ALL", name)
		}
		if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") && !slices.Contains(s.SecurityOpt, "no-new-privileges") {
			p.addf("%s: security_opt lacks no-new-privileges", name)
		}
		if spec.listenKey == "" {
			continue
		}
		// Longer than the processes' own drain, or Docker kills them mid-way.
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= httpserver.ShutdownTimeout {
			p.addf("%s: stop_grace_period %v must exceed the %v graceful shutdown", name, s.StopGracePeriod, httpserver.ShutdownTimeout)
		}
		checkProbe(p, name, s, spec.listenKey)
	}
}

// checkForwarded: a DocuVault container sees only the variables in its
// environment:, so each setting its command reads and .env.example
// documents is forwarded (as ${KEY:-} when optional: an empty value is the
// binary's default), or setting it in .env would silently do nothing.
func checkForwarded(p *problems, project *types.Project, env envExample) {
	for name, spec := range specs {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		for _, key := range spec.reads {
			if _, ok := s.Environment[key]; !ok && env.documented[key] {
				p.addf("%s: environment: %s is not forwarded (its command reads it; .env.example documents it): add %s: ${%s:-}", name, key, key, key)
			}
		}
	}
}

// unclassified returns the problems with the reads of specs against keys
// (internal/config.Keys): a key no service reads, or a read that is no key.
func unclassified(keys []string) []string {
	var p problems
	read := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		for _, key := range specs[name].reads {
			read[key] = true
			if !slices.Contains(keys, key) {
				p.addf("%s: reads %s, which is not in internal/config.Keys", name, key)
			}
		}
	}
	for _, key := range keys {
		if !read[key] {
			p.addf("%s: in internal/config.Keys but no service's reads in deploy/compose_test.go: add it to each service whose command reads it (and forward it in docker-compose.yml)", key)
		}
	}
	return p
}

// TestSettingsClassified keeps specs' reads in step with internal/config:
// a new setting must be placed with the services that read it, which
// checkForwarded then holds docker-compose.yml to.
func TestSettingsClassified(t *testing.T) {
	t.Parallel()
	for _, problem := range unclassified(config.Keys) {
		t.Error(problem)
	}
	// And the check can fail.
	if got := unclassified(append(slices.Clone(config.Keys), "NEW_SETTING")); len(got) != 1 || !strings.HasPrefix(got[0], "NEW_SETTING: ") {
		t.Errorf("a setting no service reads: reported %q", got)
	}
	if got := unclassified(slices.DeleteFunc(slices.Clone(config.Keys), func(k string) bool { return k == "CLAIM_AFTER" })); len(got) != 1 || !strings.Contains(got[0], "reads CLAIM_AFTER") {
		t.Errorf("a read that is no setting: reported %q", got)
	}
}

// checkProbe: the health check runs the image's probe against /readyz on
// the port the process listens on.
func checkProbe(p *problems, name string, s types.ServiceConfig, listenKey string) {
	_, listenPort, err := net.SplitHostPort(value(s.Environment, listenKey))
	if err != nil {
		p.addf("%s: environment: %s is not host:port", name, listenKey)
		return
	}
	if s.HealthCheck == nil {
		return // reported by checkHealthAndRestart
	}
	test := s.HealthCheck.Test
	if len(test) != 3 || test[0] != "CMD" || test[1] != "healthcheck" {
		p.addf("%s: healthcheck %q, want [CMD healthcheck http://127.0.0.1:PORT/readyz] (the image has no shell or curl)", name, test)
		return
	}
	u, err := url.Parse(test[2])
	if err != nil || u.Hostname() != "127.0.0.1" || u.Port() != listenPort || u.Path != "/readyz" {
		p.addf("%s: healthcheck probes %s, want http://127.0.0.1:%s/readyz (%s)", name, test[2], listenPort, listenKey)
	}
}

// checkDataStores: no route out for the data stores, and Redis persists
// what it carries (undelivered events).
func checkDataStores(p *problems, project *types.Project) {
	for _, name := range dataStores {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		if len(s.Networks) == 0 {
			p.addf("%s: network: on the default network, want only internal ones", name)
		}
		for network := range s.Networks {
			if n, ok := project.Networks[network]; !ok || !n.Internal {
				p.addf("%s: network %s is not internal", name, network)
			}
		}
	}
	if redis, ok := project.Services["redis"]; ok {
		i := slices.Index(redis.Command, "--appendonly")
		if i < 0 || i+1 >= len(redis.Command) || redis.Command[i+1] != "yes" {
			p.addf("redis: append-only file not enabled (command %q): undelivered events would not survive a restart", redis.Command)
		}
	}
}

func value(env types.MappingWithEquals, key string) string {
	if v := env[key]; v != nil {
		return *v
	}
	return ""
}

// A reference: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
// ${VAR?error}, ${VAR:+alt}, ${VAR+alt}.
var referenceRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}`)

// checkReferences: every ${VAR} in the file is set in .env.example, or
// documented there (commented out) and given a default here; no bare $VAR.
func checkReferences(p *problems, raw map[string]any, env envExample) {
	for _, s := range allStrings(raw) {
		s = strings.ReplaceAll(s, "$$", "") // an escaped $, not a reference
		for _, m := range referenceRE.FindAllStringSubmatch(s, -1) {
			name, op := m[1], m[2]
			_, set := env.set[name]
			switch {
			case set:
			case env.documented[name] && (op == "-" || op == ":-"):
			case env.documented[name]:
				p.addf("interpolation: ${%s} is commented out in .env.example and has no default here", name)
			default:
				p.addf("interpolation: ${%s} is not in .env.example", name)
			}
		}
		if rest := referenceRE.ReplaceAllString(s, ""); strings.Contains(rest, "$") {
			p.addf("interpolation: bare or malformed reference in %q: write ${VAR}", s)
		}
	}
}

// secretKeyRE matches settings that hold a secret (MINIO_ROOT_USER is
// MinIO's access key). A KEY_FILE names a file, a KEY_TTL (such as
// AUTH_ACCESS_TOKEN_TTL) a duration: not secrets.
var secretKeyRE = regexp.MustCompile(`(?i)(passw|secret|token|key|credential|private|root_user)`)

// A value that only refers to .env, with no default (a default would be a
// secret written here).
var pureReferenceRE = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}$`)

// userinfoRE finds the password of a URL (scheme://user:password@host).
var userinfoRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:([^@\s]*)@`)

// checkLiteralSecrets: secret-looking settings come from .env, and no URL
// carries a literal password.
func checkLiteralSecrets(p *problems, raw map[string]any) {
	services, _ := raw["services"].(map[string]any)
	for name, svc := range services {
		svc, _ := svc.(map[string]any)
		for key, v := range environment(svc["environment"]) {
			if secretKeyRE.MatchString(key) && !strings.HasSuffix(key, "_FILE") && !strings.HasSuffix(key, "_TTL") && !pureReferenceRE.MatchString(v) {
				p.addf("%s: secret %s is %q, want ${%s} from .env without a default", name, key, v, key)
			}
		}
	}
	for _, s := range allStrings(raw) {
		for _, m := range userinfoRE.FindAllStringSubmatch(s, -1) {
			if !pureReferenceRE.MatchString(m[1]) {
				p.addf("secret: literal password in a URL: %q", s)
			}
		}
	}
}

// environment reads a raw environment: a mapping or a list of KEY=VALUE.
func environment(v any) map[string]string {
	env := map[string]string{}
	switch v := v.(type) {
	case map[string]any:
		for key, value := range v {
			if value != nil {
				env[key] = fmt.Sprint(value)
			}
		}
	case []any:
		for _, item := range v {
			key, value, _ := strings.Cut(fmt.Sprint(item), "=")
			env[key] = value
		}
	}
	return env
}

// allStrings returns every string (keys too) in a raw YAML model.
func allStrings(v any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, v)
		case map[string]any:
			for key, item := range v {
				out = append(out, key)
				walk(item)
			}
		case []any:
			for _, item := range v {
				walk(item)
			}
		}
	}
	walk(v)
	return out
}
