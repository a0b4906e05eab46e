package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/testenv"

	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/tracing"
)

// Every response names its request id and span, whatever answered it: a
// handler, a problem, the router's 404 or 405.
func TestEveryResponseNamesItsRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodGet, "/no/such/route", http.StatusNotFound},
		{http.MethodPut, "/api/v1/documents", http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/v1/documents/not-a-uuid", http.StatusNotFound},
		{http.MethodGet, "/api/v1/documents?limit=-1", http.StatusBadRequest},
	} {
		for _, id := range []string{"client-req-1", "not well formed!"} {
			req, _ := http.NewRequest(c.method, e.srv.URL+c.path, nil)
			req.Header.Set("X-Request-ID", id)
			req.Header.Set("traceparent", parent)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			what := c.method + " " + c.path + " with X-Request-ID " + id
			if resp.StatusCode != c.status {
				t.Errorf("%s: status %d; want %d", what, resp.StatusCode, c.status)
			}
			got := resp.Header.Get("X-Request-ID")
			if tracing.ValidRequestID(id) && got != id {
				t.Errorf("%s: X-Request-ID %q; want it echoed", what, got)
			}
			if !tracing.ValidRequestID(id) {
				if _, err := uuid.Parse(got); err != nil {
					t.Errorf("%s: X-Request-ID %q; want a new UUID", what, got)
				}
			}
			tp := resp.Header.Get("traceparent")
			if tracing.TraceIDOf(tp) != "4bf92f3577b34da6a3ce929d0e0e4736" || strings.Contains(tp, "00f067aa0ba902b7") {
				t.Errorf("%s: traceparent %q; want a span of its own in the caller's trace", what, tp)
			}
		}
	}
}

// An upload's audit row and outbox row hold its request id and the
// request's span.
func TestUploadRecordsItsRequestIDAndTraceparent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	body := multipartBody(boundary, part{fileHeader("a.pdf"), []byte("%PDF-1.4 traced")})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/documents", bytes.NewReader(body))
	req.Header.Set("Content-Type", mpType)
	req.Header.Set("X-Request-ID", "upload-req-7")
	req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	span := resp.Header.Get("traceparent")
	if tracing.TraceIDOf(span) != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("response traceparent %q; want the caller's trace", span)
	}
	for _, table := range []string{"audit_log", "outbox"} {
		var requestID, traceparent *string
		if err := e.admin.QueryRow(context.Background(), `select request_id, traceparent from `+table).Scan(&requestID, &traceparent); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if requestID == nil || *requestID != "upload-req-7" || traceparent == nil || *traceparent != span {
			t.Errorf("%s: request_id %v, traceparent %v; want upload-req-7, %s", table, deref(requestID), deref(traceparent), span)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

// The API's error lines name the request and its trace.
func TestErrorLogsNameTheRequestAndTrace(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var logs testenv.SyncBuffer
	// Acting for a user (no database to check a token against).
	srv := actingServer(t, actAs(httpapi.NewActing(httpapi.Deps{
		Config: httpapi.Config{UploadMaxBytes: 1 << 20, DuplicatePolicy: "allow"}, Log: slog.New(slog.NewJSONHandler(&logs, nil)),
		DB: pool, Metrics: http.NotFoundHandler(),
	}), uuid.Must(uuid.NewV7())))
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/documents", nil)
	req.Header.Set("X-Request-ID", "logged-req-3")
	req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d; want 503 with PostgreSQL down", resp.StatusCode)
	}
	var rec map[string]any
	for line := range strings.Lines(logs.String()) {
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "dependency unavailable" {
			break
		}
		rec = nil
	}
	if rec == nil || rec["request_id"] != "logged-req-3" || rec["trace_id"] != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("log line %v; want dependency unavailable with request_id logged-req-3 and the trace id\n%s", rec, logs.String())
	}
}
