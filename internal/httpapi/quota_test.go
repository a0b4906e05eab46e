package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/store"
)

// uploadAs posts content as user's upload and returns the status and body.
func (e *env) uploadAs(t *testing.T, user uuid.UUID, content []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/documents",
		bytes.NewReader(multipartBody(boundary, part{header: fileHeader("q.pdf"), body: content})))
	req.Header.Set("Content-Type", mpType)
	req.Header.Set("X-Test-Owner", user.String())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("error answered with Content-Type %q: %s", resp.Header.Get("Content-Type"), raw)
	}
	return resp.StatusCode, out
}

func (e *env) newUser(t *testing.T) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	if _, err := e.admin.Exec(context.Background(), `insert into users (id, email) values ($1, $2)`, id, id.String()+"@example.org"); err != nil {
		t.Fatal(err)
	}
	return id
}

// An upload its owner's quota cannot take is refused up front with a 507
// naming the quota, and leaves nothing behind; the configured default
// applies to owners without limits of their own.
func TestUploadOverQuotaIsRefusedUpFront(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{Quota: store.QuotaLimits{Bytes: 1000, Documents: 5}})
	ctx := context.Background()

	byDefault := e.newUser(t)
	code, body := e.uploadAs(t, byDefault, bytes.Repeat([]byte("a"), 1001))
	if code != http.StatusInsufficientStorage || body["type"] != "https://docuvault.dev/problems/quota-exceeded" {
		t.Errorf("over the default byte quota: %d %v; want 507 quota-exceeded", code, body)
	}
	if body["quota"] != "bytes" || body["limit"] != float64(1000) || body["used"] != float64(0) {
		t.Errorf("problem members %v; want quota bytes, limit 1000, used 0", body)
	}
	e.assertNothingStored(t)

	ownLimit := e.newUser(t)
	if _, err := e.admin.Exec(ctx, `insert into quotas (user_id, max_bytes, max_documents, used_documents) values ($1, null, 3, 3)`, ownLimit); err != nil {
		t.Fatal(err)
	}
	code, body = e.uploadAs(t, ownLimit, []byte("small"))
	if code != http.StatusInsufficientStorage || body["quota"] != "documents" || body["limit"] != float64(3) {
		t.Errorf("over its own document quota: %d %v; want 507 naming the documents quota of 3", code, body)
	}
	e.assertNothingStored(t)

	if code, body := e.uploadAs(t, byDefault, bytes.Repeat([]byte("b"), 1000)); code != http.StatusAccepted {
		t.Errorf("an upload that fits: %d %v; want 202", code, body)
	}
}
