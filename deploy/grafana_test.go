package deploy_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboardFile is the Grafana dashboard, relative to this directory.
const dashboardFile = "grafana/docuvault.json"

// dashboardSignals are the metrics the dashboard must chart: issue #7's
// key signals (upload rate and latency, outbox backlog and age, consumer
// lag, dead letters, quota rejections) and the rest of what the three
// processes expose for operators.
var dashboardSignals = []string{
	"docuvault_http_requests_total",
	"docuvault_http_request_duration_seconds_bucket",
	"docuvault_outbox_backlog",
	"docuvault_outbox_oldest_age_seconds",
	"docuvault_relay_events_published_total",
	"docuvault_relay_event_age_seconds_bucket",
	"docuvault_relay_leader",
	"docuvault_consumer_group_lag",
	"docuvault_consumer_group_pending",
	"docuvault_consumer_handling_seconds_bucket",
	"docuvault_consumer_retries_total",
	"docuvault_consumer_messages_total",
	"docuvault_dead_letter_entries",
	"docuvault_finalize_documents_total",
	"docuvault_audit_chain_head_seq",
	"docuvault_audit_chain_links_total",
}

// Every expression of the dashboard names only metrics the code registers,
// with the suffixes their type exposes, so that renaming a metric without
// the dashboard fails here rather than leaving a panel empty.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	known, err := registeredMetrics("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(known) < 20 {
		t.Fatalf("found %d metrics in the code (%v); the scan of the source is broken", len(known), known)
	}
	for _, problem := range checkDashboard(raw, known) {
		t.Error(problem)
	}
}

// The check fails on a dashboard broken on purpose.
func TestGrafanaDashboardCheckFails(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	known, err := registeredMetrics("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, old, new, want string }{
		{"renamed metric", "docuvault_outbox_backlog)", "docuvault_outbox_size)", "unknown metric docuvault_outbox_size"},
		{"wrong suffix", "docuvault_relay_events_published_total[", "docuvault_relay_events_published_total_bucket[", "unknown metric docuvault_relay_events_published_total_bucket"},
		{"counter without rate", "sum(docuvault_http_requests_in_flight)", "sum(docuvault_http_requests_total)", "docuvault_http_requests_total is a counter"},
		{"signal dropped", "max(docuvault_dead_letter_entries)", "max(docuvault_consumer_group_pending)", "no panel charts docuvault_dead_letter_entries"},
		{"fixed datasource", `"uid": "${datasource}"`, `"uid": "P1809F7CD0C75ACF3"`, "datasource"},
		{"not JSON", `"panels": [`, `"panels": [[`, "not JSON"},
	} {
		broken := strings.Replace(string(raw), c.old, c.new, 1)
		if broken == string(raw) {
			t.Errorf("%s: %q is not in the dashboard", c.name, c.old)
			continue
		}
		problems := checkDashboard([]byte(broken), known)
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
			t.Errorf("%s: problems %q; want one containing %q", c.name, problems, c.want)
		}
	}
}

// metricKind is how a metric was registered: counter, gauge, histogram or
// summary.
type metricKind string

// metricOpts finds metrics declared with client_golang's options structs
// (the name their first field) and collectors' descriptors.
var (
	metricOpts = regexp.MustCompile(`(Counter|Gauge|Histogram|Summary)Opts\{\s*Name:\s*"(docuvault_[a-z0-9_]+)"`)
	metricDesc = regexp.MustCompile(`NewDesc\(\s*"(docuvault_[a-z0-9_]+)"`)
)

// registeredMetrics reads the non-test Go files under root and returns the
// metrics they register. Descriptors of hand-written collectors report
// gauges here.
func registeredMetrics(root string) (map[string]metricKind, error) {
	known := map[string]metricKind{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricOpts.FindAllSubmatch(src, -1) {
			known[string(m[2])] = metricKind(strings.ToLower(string(m[1])))
		}
		for _, m := range metricDesc.FindAllSubmatch(src, -1) {
			known[string(m[1])] = "gauge"
		}
		return nil
	})
	return known, err
}

// exposedName resolves a series name to its metric: the name itself, or a
// histogram's or summary's _bucket, _sum and _count.
func exposedName(name string, known map[string]metricKind) (string, metricKind, bool) {
	if kind, ok := known[name]; ok {
		return name, kind, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if kind := known[base]; kind == "histogram" || (kind == "summary" && suffix != "_bucket") {
			return base, kind, true
		}
	}
	return "", "", false
}

// The dashboard's JSON, as far as the check reads it.
type (
	dashboardJSON struct {
		SchemaVersion int              `json:"schemaVersion"`
		UID           string           `json:"uid"`
		Title         string           `json:"title"`
		Panels        []dashboardPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name, Type, Query string
			} `json:"list"`
		} `json:"templating"`
	}
	dashboardPanel struct {
		ID         int               `json:"id"`
		Type       string            `json:"type"`
		Title      string            `json:"title"`
		Datasource *dashboardSource  `json:"datasource"`
		Panels     []dashboardPanel  `json:"panels"` // a collapsed row's
		Targets    []dashboardTarget `json:"targets"`
	}
	dashboardTarget struct {
		RefID      string           `json:"refId"`
		Expr       string           `json:"expr"`
		Datasource *dashboardSource `json:"datasource"`
	}
	dashboardSource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
)

// checkDashboard returns what is wrong with the dashboard raw: metrics the
// code does not register (known), counters read without rate or increase,
// a datasource other than the dashboard's variable, duplicate panel ids,
// and signals no panel charts.
func checkDashboard(raw []byte, known map[string]metricKind) []string {
	var d dashboardJSON
	if err := json.Unmarshal(raw, &d); err != nil {
		return []string{fmt.Sprintf("%s is not JSON: %v", dashboardFile, err)}
	}
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if d.SchemaVersion < 36 || d.UID == "" || d.Title == "" {
		report("schemaVersion %d, uid %q, title %q: want schemaVersion 36 or later (Grafana 9+), a uid and a title", d.SchemaVersion, d.UID, d.Title)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v struct{ Name, Type, Query string }) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		report("no datasource variable named datasource of type prometheus")
	}
	const source = "${datasource}"
	checkSource := func(where string, s *dashboardSource) {
		if s == nil || s.Type != "prometheus" || s.UID != source {
			report("%s: datasource %+v; want the prometheus one the variable %s names", where, s, source)
		}
	}

	charted := map[string]bool{}
	ids := map[int]bool{}
	var walk func(panels []dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, p := range panels {
			if ids[p.ID] {
				report("panel %q: id %d used twice", p.Title, p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				report("panel %q has no query", p.Title)
			}
			checkSource(fmt.Sprintf("panel %q", p.Title), p.Datasource)
			for _, target := range p.Targets {
				where := fmt.Sprintf("panel %q query %s", p.Title, target.RefID)
				checkSource(where, target.Datasource)
				names, rated := promqlMetrics(target.Expr)
				if len(names) == 0 {
					report("%s: no metric in %q", where, target.Expr)
				}
				for _, name := range names {
					base, kind, ok := exposedName(name, known)
					if !ok {
						report("%s: unknown metric %s (no collector in the code registers it)", where, name)
						continue
					}
					// A histogram's or summary's series are counters too.
					if (kind == "counter" || base != name) && !rated[name] {
						report("%s: %s is a counter: read it with rate or increase", where, name)
					}
					charted[name], charted[base] = true, true
				}
			}
		}
	}
	walk(d.Panels)
	for _, name := range dashboardSignals {
		if !charted[name] {
			report("no panel charts %s", name)
		}
	}
	return problems
}

var (
	// promqlStrings are quoted strings, promqlMatchers what is left of
	// label matchers once their values are gone, promqlRanges ranges and
	// subqueries ([5m], [1h:1m]); promqlGroups are the label lists of by,
	// without, on, ignoring and group_*; promqlVars are Grafana's
	// variables ($__rate_interval, ${x}).
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGroups   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlVars     = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	// promqlRated is a series read inside rate, irate or increase.
	promqlRated = regexp.MustCompile(`\b(?:rate|irate|increase)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
)

// promqlKeywords are PromQL words that are neither metrics nor followed by
// a parenthesis.
var promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}

// promqlMetrics returns the metric names expr reads (identifiers that are
// not functions, keywords, labels, numbers or durations) and which of them
// are read through rate, irate or increase. It is no full PromQL parser,
// only enough for the dashboard's expressions.
func promqlMetrics(expr string) (names []string, rated map[string]bool) {
	s := promqlVars.ReplaceAllString(expr, "1")
	s = promqlStrings.ReplaceAllString(s, " ")
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlGroups.ReplaceAllString(s, " ")
	rated = map[string]bool{}
	for _, m := range promqlRated.FindAllStringSubmatch(s, -1) {
		rated[m[1]] = true
	}
	s = promqlRanges.ReplaceAllString(s, " ")
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		word := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // a number's exponent or suffix: 1e3
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if slices.Contains(promqlKeywords, strings.ToLower(word)) {
			continue
		}
		if !slices.Contains(names, word) {
			names = append(names, word)
		}
	}
	return names, rated
}
