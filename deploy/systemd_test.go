package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docuvault/docuvault/internal/httpserver"
)

// unit is a parsed systemd unit file: section -> key -> values in order
// (a key may be given several times, as ExecStart= of a oneshot).
type unit map[string]map[string][]string

// parseUnit reads the INI syntax of systemd unit files: [Section] lines,
// Key=Value lines, # and ; comments, backslash continuations.
func parseUnit(text string) (unit, error) {
	u := unit{}
	section := ""
	var logical strings.Builder
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if logical.Len() == 0 && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")) {
			continue
		}
		if body, ok := strings.CutSuffix(line, "\\"); ok {
			logical.WriteString(body + " ")
			continue
		}
		logical.WriteString(line)
		line = strings.TrimSpace(logical.String())
		logical.Reset()
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is neither [Section] nor Key=Value in a section", n+1, line)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	return u, nil
}

// get returns the values of key in section.
func (u unit) get(section, key string) []string { return u[section][key] }

// hardening: the [Service] settings every unit has, with exactly these
// values. The processes need the network and nothing else: no
// capabilities, no writable file system, no devices, no other users' files.
var hardening = map[string][]string{
	"NoNewPrivileges":         {"yes"},
	"ProtectSystem":           {"strict"},
	"ProtectHome":             {"yes"},
	"PrivateTmp":              {"yes"},
	"PrivateDevices":          {"yes"},
	"PrivateMounts":           {"yes"},
	"ProtectKernelTunables":   {"yes"},
	"ProtectKernelModules":    {"yes"},
	"ProtectKernelLogs":       {"yes"},
	"ProtectControlGroups":    {"yes"},
	"CapabilityBoundingSet":   {""},
	"AmbientCapabilities":     {""},
	"RestrictAddressFamilies": {"AF_INET AF_INET6 AF_UNIX"},
	"RestrictNamespaces":      {"yes"},
	"RestrictSUIDSGID":        {"yes"},
	"LockPersonality":         {"yes"},
	"MemoryDenyWriteExecute":  {"yes"},
	"SystemCallArchitectures": {"native"},
	"SystemCallFilter":        {"@system-service", "~@privileged @resources"},
	"UMask":                   {"0077"},
}

// unitSpec is what one unit runs.
type unitSpec struct {
	binary  string   // under /usr/local/bin
	args    []string // after --env-file /etc/docuvault/env, per ExecStart
	oneshot bool
	// metrics is the METRICS_ADDR the unit sets ("" for none).
	metrics string
}

var units = map[string]unitSpec{
	"docuvault-api.service":      {binary: "api", args: []string{"serve"}},
	"docuvault-relay@.service":   {binary: "relay", args: []string{""}, metrics: "127.0.0.1:%i"},
	"docuvault-consumer.service": {binary: "consumer", args: []string{""}, metrics: "127.0.0.1:9102"},
	"docuvault-migrate.service":  {binary: "api", args: []string{"migrate", "init-bucket"}, oneshot: true},
}

const envFile = "/etc/docuvault/env"

// checkUnits checks the units in dir (deploy/systemd).
func checkUnits(dir string) []string {
	var p problems
	metricsAddrs := map[string]string{}
	for name, spec := range units {
		text, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			p.addf("%s: missing (%v)", name, err)
			continue
		}
		u, err := parseUnit(string(text))
		if err != nil {
			p.addf("%s: %v", name, err)
			continue
		}
		for key, want := range hardening {
			if got := u.get("Service", key); !slices.Equal(got, want) {
				p.addf("%s: %s=%q, want exactly %q", name, key, got, want)
			}
		}
		if got := u.get("Service", "User"); !slices.Equal(got, []string{"docuvault"}) {
			p.addf("%s: User=%q, want the dedicated user docuvault", name, got)
		}
		if got := u.get("Service", "Group"); !slices.Equal(got, []string{"docuvault"}) {
			p.addf("%s: Group=%q, want docuvault", name, got)
		}
		// The binary reads the env file itself (--env-file). systemd's
		// EnvironmentFile= would override Environment= (the relay's and the
		// consumer's own METRICS_ADDR) and parse the file by other rules.
		if got := u.get("Service", "EnvironmentFile"); len(got) > 0 {
			p.addf("%s: EnvironmentFile=%q: let the binary read %s (--env-file) so that Environment= wins", name, got, envFile)
		}
		var want []string
		for _, arg := range spec.args {
			want = append(want, strings.TrimSpace("/usr/local/bin/"+spec.binary+" --env-file "+envFile+" "+arg))
		}
		if got := u.get("Service", "ExecStart"); !slices.Equal(got, want) {
			p.addf("%s: ExecStart=%q, want %q (each reading the env file %s)", name, got, want, envFile)
		}
		checkMetricsAddr(&p, name, u, spec, metricsAddrs)
		if got := u.get("Install", "WantedBy"); !slices.Equal(got, []string{"multi-user.target"}) {
			p.addf("%s: WantedBy=%q, want multi-user.target", name, got)
		}
		if spec.oneshot {
			if got := u.get("Service", "Type"); !slices.Equal(got, []string{"oneshot"}) {
				p.addf("%s: Type=%q, want oneshot", name, got)
			}
			continue
		}
		if got := u.get("Service", "Restart"); !slices.Equal(got, []string{"on-failure"}) {
			p.addf("%s: Restart=%q, want on-failure", name, got)
		}
		stop, err := timeSpan(u.get("Service", "TimeoutStopSec"))
		if err != nil || stop <= httpserver.ShutdownTimeout {
			p.addf("%s: TimeoutStopSec=%q must exceed the %v graceful shutdown", name, u.get("Service", "TimeoutStopSec"), httpserver.ShutdownTimeout)
		}
		for _, key := range []string{"Requires", "After"} {
			if !slices.ContainsFunc(u.get("Unit", key), func(v string) bool {
				return slices.Contains(strings.Fields(v), "docuvault-migrate.service")
			}) {
				p.addf("%s: %s= lacks docuvault-migrate.service (the schema must be current first)", name, key)
			}
		}
	}
	return p
}

// checkMetricsAddr: the relay instances and the consumer each set their
// own METRICS_ADDR, none the same (the env file holds one address).
func checkMetricsAddr(p *problems, name string, u unit, spec unitSpec, seen map[string]string) {
	var got string
	for _, env := range u.get("Service", "Environment") {
		for _, assignment := range strings.Fields(env) {
			if addr, ok := strings.CutPrefix(assignment, "METRICS_ADDR="); ok {
				got = addr
			}
		}
	}
	if got != spec.metrics {
		p.addf("%s: Environment=METRICS_ADDR=%s, want %s", name, got, spec.metrics)
	}
	if got == "" {
		return
	}
	if other, ok := seen[got]; ok {
		p.addf("%s: METRICS_ADDR %s is also %s's", name, got, other)
	}
	seen[got] = name
}

var minRE = regexp.MustCompile(`^(\d+)min$`)

// timeSpan parses the systemd time spans the units use: "90" (seconds),
// "45s", "2min", or a Go duration.
func timeSpan(values []string) (time.Duration, error) {
	if len(values) != 1 {
		return 0, fmt.Errorf("%d values", len(values))
	}
	v := values[0]
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	if m := minRE.FindStringSubmatch(v); m != nil {
		n, _ := strconv.Atoi(m[1])
		return time.Duration(n) * time.Minute, nil
	}
	return time.ParseDuration(v)
}
