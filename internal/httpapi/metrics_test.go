package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/metrics"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// newMetricsEnv is newEnv with the API's metrics registered on reg and
// served at /metrics, as cmd/api wires them.
func newMetricsEnv(t *testing.T, cfg httpapi.Config, reg *prometheus.Registry) *env {
	t.Helper()
	db := testenv.NewDB(t)
	s3 := testenv.S3(t)
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := redis.ParseURL(testenv.RedisURL())
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	cfg.UploadMaxBytes, cfg.DuplicatePolicy = 1<<20, "allow"
	app := testenv.Pool(t, db.AppURL)
	h := httpapi.NewActing(httpapi.Deps{
		Config: cfg, Log: testenv.Logger(t), DB: app, Redis: rdb, Blobs: blobs,
		Metrics: metrics.Handler(reg), Registry: reg,
	})
	admin := testenv.Pool(t, db.AdminDSN())
	user := testenv.User(t, admin, "default-user@example.org")
	srv := actingServer(t, actAs(h, user))
	return &env{srv: srv, app: app, admin: admin, blobs: blobs, s3: s3, user: user}
}

// scrape reads base's /metrics: each series (name and labels, as exposed)
// with its value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, raw)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// do sends a request without a body and returns its status and body.
// do sends a request without a body, with headers (name, value pairs).
func do(t *testing.T, method, url string, headers ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// The API counts and times requests by route pattern and status: handler
// problems, the router's own 404s and 405s, uploads (accepted and refused
// for quota) and streamed downloads; ids never become labels. Finalising
// counts its outcomes, quota rejections included.
func TestMetricsCountRequestsByRoutePattern(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	e := newMetricsEnv(t, httpapi.Config{Quota: store.QuotaLimits{Bytes: 1000, Documents: 100}}, reg)
	ctx := context.Background()
	owner := e.newUser(t)

	// Two uploads that fit the quota one at a time: both accepted, and
	// the finalizer can make only one of them ready.
	first, second := bytes.Repeat([]byte("a"), 600), bytes.Repeat([]byte("b"), 600)
	var ids []string
	for _, content := range [][]byte{first, second} {
		code, body := e.uploadAs(t, owner, content)
		if code != http.StatusAccepted {
			t.Fatalf("upload: %d %v; want 202", code, body)
		}
		ids = append(ids, body["id"].(string))
	}
	if code, body := e.uploadAs(t, e.newUser(t), bytes.Repeat([]byte("c"), 1001)); code != http.StatusInsufficientStorage {
		t.Fatalf("upload over quota: %d %v; want 507", code, body)
	}

	missing := uuid.Must(uuid.NewV7()).String()
	requests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/api/v1/documents/" + missing, http.StatusNotFound},             // a handler's problem
		{http.MethodGet, "/api/v1/documents/" + ids[0] + "/content", http.StatusConflict}, // not ready yet
		{http.MethodGet, "/api/v1/no-such-route/" + missing, http.StatusNotFound},         // the sub-router's 404
		{http.MethodGet, "/no-such-route", http.StatusNotFound},                           // the root's 404
		{http.MethodPut, "/healthz", http.StatusMethodNotAllowed},
		{"BREW", "/api/v1/documents", http.StatusMethodNotAllowed},
		{http.MethodGet, "/healthz", http.StatusOK},
	}
	for _, r := range requests {
		if code, body := do(t, r.method, e.srv.URL+r.path, "X-Test-Owner", owner.String()); code != r.status {
			t.Fatalf("%s %s: %d %s; want %d", r.method, r.path, code, body, r.status)
		}
	}

	// Finalise both uploads, as the consumer would: one ready, one
	// rejected for quota.
	fin := finalize.New(testenv.Logger(t), e.app, e.blobs, nil, store.QuotaLimits{Bytes: 1000, Documents: 100})
	fin.Instrument(reg)
	rows, err := e.admin.Query(ctx, `select payload::text from outbox where event_type = $1 order by id`, events.DocumentUploaded)
	if err != nil {
		t.Fatal(err)
	}
	var evs []events.Envelope
	for rows.Next() {
		var payload string
		var ev events.Envelope
		if err := rows.Scan(&payload); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(payload), &ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	rows.Close()
	if len(evs) != 2 {
		t.Fatalf("%d document.uploaded events; want 2", len(evs))
	}
	for _, ev := range evs {
		if err := fin.Finalize(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// The first upload's event comes first: it is the ready one.
	code, body := do(t, http.MethodGet, e.srv.URL+"/api/v1/documents/"+ids[0]+"/content", "X-Test-Owner", owner.String())
	if code != http.StatusOK || !bytes.Equal(body, first) {
		t.Fatalf("download: %d, %d bytes; want 200 and the %d bytes uploaded", code, len(body), len(first))
	}

	got := scrape(t, e.srv.URL)
	for series, want := range map[string]float64{
		`docuvault_http_requests_total{method="POST",route="/api/v1/documents",status="202"}`:                2,
		`docuvault_http_requests_total{method="POST",route="/api/v1/documents",status="507"}`:                1,
		`docuvault_http_requests_total{method="GET",route="/api/v1/documents/{id}",status="404"}`:            1,
		`docuvault_http_requests_total{method="GET",route="/api/v1/documents/{id}/content",status="409"}`:    1,
		`docuvault_http_requests_total{method="GET",route="/api/v1/documents/{id}/content",status="200"}`:    1,
		`docuvault_http_requests_total{method="GET",route="unmatched",status="404"}`:                         2,
		`docuvault_http_requests_total{method="PUT",route="unmatched",status="405"}`:                         1,
		`docuvault_http_requests_total{method="OTHER",route="unmatched",status="405"}`:                       1,
		`docuvault_http_requests_total{method="GET",route="/healthz",status="200"}`:                          1,
		`docuvault_http_request_duration_seconds_count{method="POST",route="/api/v1/documents"}`:             3,
		`docuvault_http_request_duration_seconds_count{method="GET",route="/api/v1/documents/{id}/content"}`: 2,
		`docuvault_http_request_duration_seconds_bucket{method="POST",route="/api/v1/documents",le="+Inf"}`:  3,
		// The scrape itself.
		`docuvault_http_requests_in_flight`:                                             1,
		`docuvault_finalize_documents_total{reason="",status="ready"}`:                  1,
		`docuvault_finalize_documents_total{reason="quota_exceeded",status="rejected"}`: 1,
	} {
		if got[series] != want {
			t.Errorf("%s = %v; want %v", series, got[series], want)
		}
	}
	for series := range got {
		if strings.HasPrefix(series, "docuvault_http_") && (strings.Contains(series, missing) || strings.Contains(series, ids[0]) || strings.Contains(series, "no-such-route")) {
			t.Errorf("a raw path became a label: %s", series)
		}
	}
}
