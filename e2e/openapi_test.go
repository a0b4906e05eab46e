package e2e

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/api"
	"github.com/docuvault/docuvault/internal/testenv"
)

// TestEveryOperationAnswersAsDescribed calls the real API's operations
// that the other end-to-end tests do not (the reads, the connection test,
// the health and metrics endpoints, the description itself) and a few errors, so that
// TestMain's validation covers every operation of api/openapi.yaml against
// a running binary.
func TestEveryOperationAnswersAsDescribed(t *testing.T) {
	t.Parallel()
	dav := testenv.StartWebDAV(t, "docuvault", "dav-password")
	st := startStack(t)
	f := st.flow(t)

	topic := f.call(http.MethodPost, "/api/v1/topics", map[string]any{"name": "Receipts"}, http.StatusCreated)["id"].(string)
	folder := f.call(http.MethodPost, "/api/v1/folders", map[string]any{"name": "2026"}, http.StatusCreated)["id"].(string)
	conn := f.call(http.MethodPost, "/api/v1/cloud-connections", map[string]any{
		"provider": "webdav", "name": "dav",
		"settings":    map[string]any{"url": dav.URL},
		"credentials": map[string]any{"username": dav.User, "password": dav.Password},
	}, http.StatusCreated)["id"].(string)
	doc := f.upload("a.pdf", []byte("%PDF-1.4\nsome bytes"), map[string]string{"title": "A", "topic_id": topic, "folder_id": folder})
	st.waitStatus(t, doc, "ready")

	for _, path := range []string{
		"/healthz",
		"/readyz",
		"/api/v1/documents?status=ready&limit=1",
		"/api/v1/documents?topic_id=" + topic + "&folder_id=" + folder,
		"/api/v1/topics",
		"/api/v1/topics/" + topic,
		"/api/v1/folders",
		"/api/v1/folders?parent_id=" + folder,
		"/api/v1/folders/" + folder,
		"/api/v1/cloud-connections?limit=10",
		"/api/v1/cloud-connections/" + conn,
		"/api/v1/audit?document_id=" + doc,
		"/api/v1/audit?type=document.uploaded&limit=1",
		"/api/v1/me",
	} {
		f.call(http.MethodGet, path, nil, http.StatusOK)
	}
	if out := f.call(http.MethodPost, "/api/v1/cloud-connections/"+conn+"/test", nil, http.StatusOK); out["ok"] != true {
		t.Errorf("connection test: %v", out)
	}

	// Problems: unknown resource, path and method, a bad parameter.
	f.call(http.MethodGet, "/api/v1/topics/"+uuid.NewString(), nil, http.StatusNotFound)
	f.call(http.MethodGet, "/api/v1/nothing-here", nil, http.StatusNotFound)
	f.call(http.MethodPut, "/api/v1/topics", nil, http.StatusMethodNotAllowed)
	f.call(http.MethodGet, "/api/v1/audit?since=yesterday", nil, http.StatusBadRequest)

	resp, err := http.Get(st.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics: %d", resp.StatusCode)
	}
	resp, err = http.Get(st.base + "/api/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, api.Spec) {
		t.Errorf("GET /api/v1/openapi.yaml: %d, %d bytes; want 200 and the embedded %d bytes", resp.StatusCode, len(body), len(api.Spec))
	}
}
