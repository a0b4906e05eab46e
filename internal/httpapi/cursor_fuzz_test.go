package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
)

// FuzzCursor: the list endpoints' query parameters (the documents' and the
// audit log's keyset cursors, and limit) either decode, and then the
// cursor is exactly the one the API hands out for the decoded position, or
// fail with the invalid-cursor or invalid-parameter error that the API
// answers as a 400 problem; never a panic, never another error.
func FuzzCursor(f *testing.F) {
	for _, c := range []struct{ cursor, limit string }{
		{"", ""},
		{"AZClyAAAcACAAAAAAAAAAQ", "50"},   // a documents cursor (16 bytes)
		{"AAAAAAAAAAE", "1"},               // an audit cursor (8 bytes: seq 1)
		{"f_________8", "200"},             // the largest audit seq
		{"gAAAAAAAAAA", "0"},               // a negative seq
		{"AZClyAAAcACAAAAAAAAAAQ==", "-1"}, // padded
		{"AZClyAAAcACAAAAAAAAAAQ\n", "201"},
		{"%%%", "1e3"},
	} {
		f.Add(c.cursor, c.limit)
	}
	s := &server{Deps: Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	f.Fuzz(func(t *testing.T, cursor, limit string) {
		q := url.Values{}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		if limit != "" {
			q.Set("limit", limit)
		}
		r := httptest.NewRequest(http.MethodGet, "/api/v1/documents?"+q.Encode(), nil)
		n, limitErr := strconv.Atoi(limit)
		limitOK := limit == "" || limitErr == nil && n >= 1 && n <= maxPageSize

		p, err := pageParams(r)
		switch {
		case err != nil:
			assertBadRequest(t, s, r, err, limitOK)
		case !limitOK:
			t.Errorf("documents: limit %q accepted as %d", limit, p.limit)
		case cursor == "" && p.after != nil:
			t.Errorf("documents: no cursor decoded as %v", p.after)
		case cursor != "" && p.after == nil:
			t.Errorf("documents: cursor %q accepted but not decoded", cursor)
		case cursor != "" && cursorFor(*p.after) != cursor:
			t.Errorf("documents: cursor %q decoded as %v, which the API writes %q", cursor, *p.after, cursorFor(*p.after))
		}

		_, _, after, err := auditParams(r)
		switch {
		case err != nil:
			assertBadRequest(t, s, r, err, limitOK)
		case !limitOK:
			t.Errorf("audit: limit %q accepted", limit)
		case after < 0:
			t.Errorf("audit: cursor %q decoded as seq %d", cursor, after)
		case cursor == "" && after != 0:
			t.Errorf("audit: no cursor decoded as seq %d", after)
		case cursor != "" && auditCursor(after) != cursor:
			t.Errorf("audit: cursor %q decoded as seq %d, which the API writes %q", cursor, after, auditCursor(after))
		}
	})
}

// assertBadRequest fails unless err is the 400 problem of a bad cursor
// (or of a bad limit, when limitOK is false), as fail writes it.
func assertBadRequest(t *testing.T, s *server, r *http.Request, err error, limitOK bool) {
	t.Helper()
	var apiErr *apiError
	if !errors.As(err, &apiErr) || apiErr.status != http.StatusBadRequest {
		t.Fatalf("error %v (%T); want a 400 apiError", err, err)
	}
	want := "invalid-cursor"
	if !limitOK {
		want = "invalid-parameter"
	}
	if apiErr.typ != want {
		t.Errorf("problem type %q; want %q", apiErr.typ, want)
	}
	w := httptest.NewRecorder()
	s.fail(w, r, err)
	var prob struct {
		Type   string
		Status int
		Detail string
	}
	if w.Code != http.StatusBadRequest || w.Header().Get("Content-Type") != "application/problem+json" ||
		json.Unmarshal(w.Body.Bytes(), &prob) != nil || prob.Status != 400 || prob.Type != "https://docuvault.dev/problems/"+want || prob.Detail == "" {
		t.Errorf("answered %d %q %s; want a 400 %s problem", w.Code, w.Header().Get("Content-Type"), w.Body, want)
	}
}
