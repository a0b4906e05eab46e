package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/docuvault/docuvault/internal/httpapi"
)

func call(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestTopicsLifecycleIsAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	base := e.srv.URL + "/api/v1/topics"

	status, topic := call(t, "POST", base, `{"name":"Taxes"}`)
	if status != 201 || topic["name"] != "Taxes" {
		t.Fatalf("create: %d %v", status, topic)
	}
	id := topic["id"].(string)
	if status, _ := call(t, "POST", base, `{"name":"taxes"}`); status != 409 {
		t.Errorf("same name, other case: %d; want 409", status)
	}
	if status, got := call(t, "PATCH", base+"/"+id, `{"name":"Taxes 2026"}`); status != 200 || got["name"] != "Taxes 2026" {
		t.Errorf("rename: %d %v", status, got)
	}
	if status, got := call(t, "GET", base, ""); status != 200 || len(got["items"].([]any)) != 1 {
		t.Errorf("list: %d %v", status, got)
	}
	if status, _ := call(t, "DELETE", base+"/"+id, ""); status != 204 {
		t.Errorf("delete: %d", status)
	}
	if status, _ := call(t, "GET", base+"/"+id, ""); status != 404 {
		t.Errorf("get after delete: %d", status)
	}
	var actions []string
	rows, err := e.admin.Query(context.Background(), `select action from audit_log order by id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		_ = rows.Scan(&a)
		actions = append(actions, a)
	}
	want := []string{"topic.created", "topic.renamed", "topic.deleted"}
	if len(actions) != len(want) {
		t.Fatalf("audit %v; want %v", actions, want)
	}
	for i := range want {
		if actions[i] != want[i] {
			t.Errorf("audit %v; want %v", actions, want)
		}
	}

	for body, wantStatus := range map[string]int{
		``:                          400,
		`{"name":""}`:               400,
		`{"name":"a/b"}`:            400,
		`{"name":42}`:               400,
		`{"name":"x","owner":"me"}`: 400,
		`{"name":"x"} {"name":"y"}`: 400,
		`[1,2]`:                     400,
	} {
		if status, prob := call(t, "POST", base, body); status != wantStatus {
			t.Errorf("POST %q: %d %v; want %d", body, status, prob, wantStatus)
		}
	}
}

func TestFoldersFormATreeWithoutCycles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	base := e.srv.URL + "/api/v1/folders"
	create := func(name string, parent any) string {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"name": name, "parent_id": parent})
		status, f := call(t, "POST", base, string(body))
		if status != 201 {
			t.Fatalf("create %s: %d %v", name, status, f)
		}
		return f["id"].(string)
	}
	root := create("Root", nil)
	child := create("Child", root)
	grandchild := create("Grandchild", child)

	// Moving a folder under its own descendant, or itself, is a cycle.
	for _, target := range []string{grandchild, root} {
		if status, prob := call(t, "PATCH", base+"/"+root, `{"parent_id":"`+target+`"}`); status != 409 || prob["type"] != "https://docuvault.dev/problems/folder-cycle" {
			t.Errorf("move root under %s: %d %v; want 409 folder-cycle", target, status, prob)
		}
	}
	// Moving to the root and renaming work.
	if status, f := call(t, "PATCH", base+"/"+grandchild, `{"parent_id":null,"name":"Top"}`); status != 200 || f["parent_id"] != nil || f["name"] != "Top" {
		t.Errorf("move to root: %d %v", status, f)
	}
	if status, got := call(t, "GET", base+"?parent_id="+root, ""); status != 200 || len(got["items"].([]any)) != 1 {
		t.Errorf("children of root: %d %v", status, got)
	}
	// A folder with subfolders cannot be deleted; an unknown parent is refused.
	if status, prob := call(t, "DELETE", base+"/"+root, ""); status != 409 || prob["type"] != "https://docuvault.dev/problems/folder-not-empty" {
		t.Errorf("delete non-empty: %d %v", status, prob)
	}
	if status, _ := call(t, "POST", base, `{"name":"x","parent_id":"0190a5c8-0000-7000-8000-000000000000"}`); status != 422 {
		t.Errorf("unknown parent: %d; want 422", status)
	}
	if status, _ := call(t, "DELETE", base+"/"+child, ""); status != 204 {
		t.Errorf("delete empty child: %d", status)
	}
}
