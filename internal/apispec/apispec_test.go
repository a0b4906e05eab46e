package apispec_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docuvault/docuvault/internal/apispec"
)

const (
	topicID = "0196a7c2-3f1e-7b4a-9c2d-5e6f7a8b9c0d"
	userID  = "0196a7c2-3f1e-7b4a-9c2d-000000000001"
)

func topicJSON(name string) string {
	return `{"id":"` + topicID + `","user_id":"` + userID + `","name":"` + name +
		`","created_at":"2026-05-01T10:00:00.123456Z","updated_at":"2026-05-01T10:00:00Z"}`
}

func problemJSON(status, typ string) string {
	return `{"type":"https://docuvault.dev/problems/` + typ + `","title":"T","status":` + status + `,"detail":"d","instance":"/x"}`
}

// fakeAPI answers each request with the canned response of its
// "METHOD path".
func fakeAPI(t *testing.T, answers map[string]func(w http.ResponseWriter)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		answer, ok := answers[r.Method+" "+r.URL.Path]
		if !ok {
			t.Errorf("fake API: unexpected %s %s", r.Method, r.URL.Path)
			w.WriteHeader(599)
			return
		}
		answer(w)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func reply(status int, contentType, body string, headers ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", contentType)
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// TestValidatorFlagsWhatBreaksTheContract: each exchange breaks the
// description in one way and must be reported; the ones that keep it must
// not be.
func TestValidatorFlagsWhatBreaksTheContract(t *testing.T) {
	good := map[string]func(http.ResponseWriter){
		"GET /api/v1/topics/" + topicID: reply(200, "application/json", topicJSON("Taxes"), "X-Request-ID", "abc-1"),
		"GET /api/v1/topics/nope":       reply(404, "application/problem+json", problemJSON("404", "not-found")),
		"PUT /api/v1/topics":            reply(405, "application/problem+json", problemJSON("405", "method-not-allowed")),
		"GET /api/v1/nowhere":           reply(404, "application/problem+json", problemJSON("404", "not-found")),
		"GET /elsewhere":                reply(200, "text/html", "<p>not the API</p>"),
	}
	bad := map[string]func(http.ResponseWriter){
		// A field the description does not have.
		"GET /api/v1/topics/" + topicID: reply(200, "application/json", strings.Replace(topicJSON("Taxes"), `"user_id"`, `"owner":1,"user_id"`, 1)),
		// A status the operation does not document.
		"DELETE /api/v1/topics/" + topicID: reply(418, "application/problem+json", problemJSON("418", "not-found")),
		// A problem type that is not described.
		"GET /api/v1/folders/" + topicID: reply(404, "application/problem+json", problemJSON("404", "no-such-thing")),
		// JSON where a problem is due.
		"GET /api/v1/documents/" + topicID: reply(404, "application/json", problemJSON("404", "not-found")),
		// A required header missing (Location on 201).
		"POST /api/v1/topics": reply(201, "application/json", topicJSON("Taxes")),
		// A request the description refuses (limit over 200), accepted.
		"GET /api/v1/topics": reply(200, "application/json", `{"items":[],"next_cursor":null}`),
		// An unknown API path answered 200.
		"GET /api/v1/nowhere": reply(200, "application/json", `{}`),
		// A request without the token the operation requires, accepted.
		"GET /api/v1/cloud-connections": reply(200, "application/json", `{"items":[],"next_cursor":null}`),
		// A malformed X-Request-ID.
		"GET /healthz": reply(200, "application/json", `{"status":"ok"}`, "X-Request-ID", "has space"),
	}
	requests := func(base string) []*http.Request {
		var reqs []*http.Request
		for key := range bad {
			method, path, _ := strings.Cut(key, " ")
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader(`{"name":"Taxes"}`)
			}
			if path == "/api/v1/topics" && method == "GET" {
				path += "?limit=500"
			}
			req, _ := http.NewRequest(method, base+path, body)
			if body != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			if path != "/api/v1/cloud-connections" {
				req.Header.Set("Authorization", "Bearer t")
			}
			reqs = append(reqs, req)
		}
		return reqs
	}

	t.Run("good", func(t *testing.T) {
		v, err := apispec.NewValidator()
		if err != nil {
			t.Fatal(err)
		}
		base := fakeAPI(t, good)
		client := &http.Client{Transport: v.Transport(http.DefaultTransport)}
		for key := range good {
			method, path, _ := strings.Cut(key, " ")
			req, _ := http.NewRequest(method, base+path, nil)
			req.Header.Set("Authorization", "Bearer t")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		if f := v.Failures(); len(f) > 0 {
			t.Errorf("valid exchanges reported:\n%s", strings.Join(f, "\n"))
		}
	})

	t.Run("bad", func(t *testing.T) {
		v, err := apispec.NewValidator()
		if err != nil {
			t.Fatal(err)
		}
		base := fakeAPI(t, bad)
		client := &http.Client{Transport: v.Transport(http.DefaultTransport)}
		for _, req := range requests(base) {
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			// The caller still reads the whole body the validator read.
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(body) == 0 {
				t.Errorf("%s %s: empty body after validation", req.Method, req.URL.Path)
			}
		}
		failures := v.Failures()
		for key := range bad {
			method, path, _ := strings.Cut(key, " ")
			found := false
			for _, f := range failures {
				if strings.HasPrefix(f, method+" "+strings.Replace(path, topicID, "{id}", 1)+" ") || strings.Contains(f, " "+method+" "+path+" ") {
					found = true
				}
			}
			if !found {
				t.Errorf("%s was not reported; failures:\n%s", key, strings.Join(failures, "\n"))
			}
		}
		if len(failures) != len(bad) {
			t.Errorf("%d failures for %d bad exchanges:\n%s", len(failures), len(bad), strings.Join(failures, "\n"))
		}
	})
}
