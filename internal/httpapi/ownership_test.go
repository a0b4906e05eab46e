package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/store"
)

// principal is who a test request acts for: a user, an administrator,
// the env's default user (the zero principal), or no one (anonymous: no
// token, refused with 401).
type principal struct {
	id        *uuid.UUID
	admin     bool
	anonymous bool
}

var anonymous = principal{anonymous: true}

func userP(id uuid.UUID) principal  { return principal{id: &id} }
func adminP(id uuid.UUID) principal { return principal{id: &id, admin: true} }

// answer is a response as a client sees it, request-specific headers
// left out.
type answer struct {
	status      int
	contentType string
	body        string
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal([]byte(a.body), &out); err != nil {
		t.Fatalf("not a JSON object (%d): %s", a.status, a.body)
	}
	return out
}

// send sends a request acting for p.
func (e *env) send(t *testing.T, p principal, method, path, contentType string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if p.anonymous {
		req.Header.Set("X-Test-Anonymous", "true")
	}
	if p.id != nil {
		req.Header.Set("X-Test-Owner", p.id.String())
		if p.admin {
			req.Header.Set("X-Test-Admin", "true")
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: string(raw)}
}

func (e *env) sendJSON(t *testing.T, p principal, method, path, body string) answer {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	return e.send(t, p, method, path, ct, []byte(body))
}

// uploadForm uploads content with the form fields given (name, value
// pairs) and headers.
func (e *env) uploadForm(t *testing.T, p principal, content string, fields ...string) answer {
	t.Helper()
	parts := []part{{header: fileHeader("a.pdf"), body: []byte(content)}}
	for i := 0; i+1 < len(fields); i += 2 {
		parts = append(parts, part{header: fieldHeader(fields[i]), body: []byte(fields[i+1])})
	}
	return e.send(t, p, http.MethodPost, "/api/v1/documents", mpType, multipartBody(boundary, parts...))
}

// created returns the id of what a 201 or 202 answer created.
func created(t *testing.T, what string, a answer) string {
	t.Helper()
	if a.status != http.StatusCreated && a.status != http.StatusAccepted {
		t.Fatalf("create %s: %d %s", what, a.status, a.body)
	}
	return a.json(t)["id"].(string)
}

// snapshot is the content of every table a request may change, and the
// object keys in the bucket.
func (e *env) snapshot(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, table := range []string{"users", "quotas", "documents", "topics", "folders", "cloud_connections",
		"cloud_sync", "audit_log", "outbox", "processed_events"} {
		var n int
		var digest string
		err := e.admin.QueryRow(ctx, `select count(*), coalesce(md5(string_agg(t::text, '|' order by t::text)), '')
			from `+table+` t`).Scan(&n, &digest)
		if err != nil {
			t.Fatal(err)
		}
		out[table] = fmt.Sprintf("%d rows, md5 %s", n, digest)
	}
	var keys []string
	for obj := range e.blobs.Client().ListObjects(ctx, e.s3.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key+" "+obj.ETag)
	}
	slices.Sort(keys)
	out["objects"] = strings.Join(keys, ",")
	return out
}

// sameAnswer fails unless got (about A's resource, named by ownID) is the
// answer want (about a random id, unknownID), byte for byte once the ids
// are the same.
func sameAnswer(t *testing.T, what string, got answer, ownID string, want answer, unknownID string) {
	t.Helper()
	norm := func(a answer, id string) answer {
		if id != "" {
			a.body = strings.ReplaceAll(a.body, id, "{id}")
		}
		return a
	}
	g, w := norm(got, ownID), norm(want, unknownID)
	if g != w {
		t.Errorf("%s: another owner's id answered\n  %d %s %s\nbut an unknown id answered\n  %d %s %s",
			what, g.status, g.contentType, g.body, w.status, w.contentType, w.body)
	}
}

// TestOtherOwnersResourcesAreUnknown: user B, a request without a token
// (anonymous) and every route of the API against user A's document,
// topic, folder and cloud connection. Every route with an {id} must have
// a case here (a route added without one fails the test); each answers
// B exactly as it answers an id that does not exist (404), and so do
// references to A's resources in bodies and query filters; an anonymous
// request gets the same 401 for both. Nothing of A's changes, and B's
// and the anonymous attempts write no row, audit row, event or object.
// An administrator sees and may change A's resources.
func TestOtherOwnersResourcesAreUnknown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{DuplicatePolicy: "reject", Quota: store.QuotaLimits{Bytes: 1 << 20, Documents: 100}})
	ctx := context.Background()
	alice, bob, root := e.newUser(t), e.newUser(t), e.newUser(t)
	if _, err := e.admin.Exec(ctx, `update users set is_admin = true where id = $1`, root); err != nil {
		t.Fatal(err)
	}
	a, b, admin := userP(alice), userP(bob), adminP(root)

	// A's resources: a topic, a folder with a subfolder, a ready document
	// in both, a cloud connection.
	topic := created(t, "topic", e.sendJSON(t, a, "POST", "/api/v1/topics", `{"name":"Taxes"}`))
	folder := created(t, "folder", e.sendJSON(t, a, "POST", "/api/v1/folders", `{"name":"Invoices"}`))
	sub := created(t, "subfolder", e.sendJSON(t, a, "POST", "/api/v1/folders", `{"name":"2026","parent_id":"`+folder+`"}`))
	const content = "%PDF-1.4 alice's secret"
	up := e.send(t, a, "POST", "/api/v1/documents", mpType, multipartBody(boundary,
		part{header: fileHeader("secret.pdf"), body: []byte(content)},
		part{header: fieldHeader("topic_id"), body: []byte(topic)},
		part{header: fieldHeader("folder_id"), body: []byte(folder)}))
	doc := created(t, "document", up)
	// Ready, as finalising would leave it (its bytes stay at the staging key).
	if _, err := e.admin.Exec(ctx, `update documents set status = 'ready', finalized_at = now() where id = $1`, doc); err != nil {
		t.Fatal(err)
	}
	conn := created(t, "cloud connection", e.sendJSON(t, a, "POST", "/api/v1/cloud-connections",
		`{"provider":"webdav","name":"nas","settings":{"url":"http://127.0.0.1:9/dav","prefix":"DocuVault/"},`+
			`"credentials":{"username":"alice","password":"pw"}}`))
	if got := e.uploadForm(t, a, "%PDF-1.4 again", "topic_id", topic, "folder_id", sub); got.status != 202 {
		t.Fatalf("A uploads into A's topic and subfolder: %d %s", got.status, got.body)
	}

	// B's own folder (to move under A's), and B's upload of the same
	// bytes: B's duplicate check and idempotency keys know nothing of A's.
	bobFolder := created(t, "B's folder", e.sendJSON(t, b, "POST", "/api/v1/folders", `{"name":"Invoices"}`))
	if got := e.sendJSON(t, b, "POST", "/api/v1/topics", `{"name":"Taxes"}`); got.status != 201 {
		t.Errorf("B names a topic like A's: %d %s; want 201", got.status, got.body)
	}
	bobDoc := e.uploadForm(t, b, content)
	if bobDoc.status != 202 || bobDoc.json(t)["duplicate_of"] != nil || bobDoc.json(t)["id"] == doc {
		t.Errorf("B uploads A's bytes: %d %s; want 202, a new document, no duplicate_of", bobDoc.status, bobDoc.body)
	}

	// A can use every route on its resources (so the 404s below are not
	// those of a wrong path).
	for _, path := range []string{"/api/v1/documents/" + doc, "/api/v1/documents/" + doc + "/content",
		"/api/v1/topics/" + topic, "/api/v1/folders/" + folder, "/api/v1/cloud-connections/" + conn} {
		if got := e.send(t, a, "GET", path, "", nil); got.status != 200 {
			t.Fatalf("A: GET %s: %d %s", path, got.status, got.body)
		}
	}
	for _, path := range []string{"/api/v1/documents?topic_id=" + topic, "/api/v1/documents?folder_id=" + folder,
		"/api/v1/folders?parent_id=" + folder, "/api/v1/audit?document_id=" + doc} {
		if got := e.send(t, a, "GET", path, "", nil); got.status != 200 || len(got.json(t)["items"].([]any)) == 0 {
			t.Fatalf("A: GET %s: %d %s; want A's items", path, got.status, got.body)
		}
	}

	before := e.snapshot(t)

	// Every route with an {id}, against A's resource of its kind.
	idOf := map[string]string{"documents": doc, "topics": topic, "folders": folder, "cloud-connections": conn}
	type idCase struct {
		method, pattern string
		contentType     string
		body            string
	}
	idCases := []idCase{
		{"GET", "/api/v1/documents/{id}", "", ""},
		{"DELETE", "/api/v1/documents/{id}", "", ""},
		{"GET", "/api/v1/documents/{id}/content", "", ""},
		{"GET", "/api/v1/topics/{id}", "", ""},
		{"PATCH", "/api/v1/topics/{id}", "application/json", `{"name":"Mine now"}`},
		{"DELETE", "/api/v1/topics/{id}", "", ""},
		{"GET", "/api/v1/folders/{id}", "", ""},
		{"PATCH", "/api/v1/folders/{id}", "application/json", `{"name":"Mine now"}`},
		{"PATCH", "/api/v1/folders/{id}", "application/json", `{"parent_id":"` + bobFolder + `"}`},
		{"PATCH", "/api/v1/folders/{id}", "application/json", `{"parent_id":null}`},
		{"DELETE", "/api/v1/folders/{id}", "", ""},
		{"GET", "/api/v1/cloud-connections/{id}", "", ""},
		{"PATCH", "/api/v1/cloud-connections/{id}", "application/json", `{"name":"mine","status":"paused"}`},
		{"PATCH", "/api/v1/cloud-connections/{id}", "application/json",
			`{"settings":{"url":"http://127.0.0.1:9/evil","prefix":"x/"},"credentials":{"username":"bob","password":"pw"}}`},
		{"DELETE", "/api/v1/cloud-connections/{id}", "", ""},
		{"POST", "/api/v1/cloud-connections/{id}/test", "", ""},
	}

	// The router's own list: every route with an {id} must be covered.
	routes, ok := e.h.(chi.Routes)
	if !ok {
		t.Fatalf("httpapi.New returns %T, not the chi router: walk its routes another way", e.h)
	}
	var withID []string
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.HasPrefix(route, "/api/v1/") && strings.Contains(route, "{id}") {
			withID = append(withID, method+" "+route)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(withID) == 0 {
		t.Fatal("the router lists no route with an {id}")
	}
	for _, r := range withID {
		if !slices.ContainsFunc(idCases, func(c idCase) bool { return c.method+" "+c.pattern == r }) {
			t.Errorf("route %s has no cross-owner case: add one to this test", r)
		}
	}
	for _, c := range idCases {
		if !slices.Contains(withID, c.method+" "+c.pattern) {
			t.Errorf("case %s %s: the router has no such route", c.method, c.pattern)
		}
	}

	for _, c := range idCases {
		kind := strings.Split(strings.TrimPrefix(c.pattern, "/api/v1/"), "/")[0]
		own, ok := idOf[kind]
		if !ok {
			t.Errorf("%s %s: no resource of kind %q to try", c.method, c.pattern, kind)
			continue
		}
		unknown := uuid.Must(uuid.NewV7()).String()
		for _, p := range []struct {
			name   string
			p      principal
			status int
		}{{"B", b, http.StatusNotFound}, {"anonymous", anonymous, http.StatusUnauthorized}} {
			want := e.send(t, p.p, c.method, strings.Replace(c.pattern, "{id}", unknown, 1), c.contentType, []byte(c.body))
			got := e.send(t, p.p, c.method, strings.Replace(c.pattern, "{id}", own, 1), c.contentType, []byte(c.body))
			if want.status != p.status {
				t.Errorf("%s: %s %s with an unknown id: %d %s; want %d", p.name, c.method, c.pattern, want.status, want.body, p.status)
			}
			sameAnswer(t, p.name+": "+c.method+" "+c.pattern+" "+c.body, got, own, want, unknown)
		}
	}

	// References to A's resources in bodies and filters are unknown too.
	unknown := uuid.Must(uuid.NewV7()).String()
	type refCase struct {
		name string
		send func(ref string) answer
		own  string // A's id the request names
	}
	refCases := []refCase{
		{"upload into A's topic", func(ref string) answer { return e.uploadForm(t, b, "%PDF-1.4 b1", "topic_id", ref) }, topic},
		{"upload into A's folder", func(ref string) answer { return e.uploadForm(t, b, "%PDF-1.4 b2", "folder_id", ref) }, folder},
		{"create a folder under A's", func(ref string) answer {
			return e.sendJSON(t, b, "POST", "/api/v1/folders", `{"name":"sneaky","parent_id":"`+ref+`"}`)
		}, folder},
		{"move B's folder under A's", func(ref string) answer {
			return e.sendJSON(t, b, "PATCH", "/api/v1/folders/"+bobFolder, `{"parent_id":"`+ref+`"}`)
		}, folder},
		{"list documents in A's topic", func(ref string) answer { return e.send(t, b, "GET", "/api/v1/documents?topic_id="+ref, "", nil) }, topic},
		{"list documents in A's folder", func(ref string) answer {
			return e.send(t, b, "GET", "/api/v1/documents?folder_id="+ref, "", nil)
		}, folder},
		{"list ready documents in A's topic", func(ref string) answer {
			return e.send(t, b, "GET", "/api/v1/documents?status=ready&topic_id="+ref, "", nil)
		}, topic},
		{"list A's subfolders", func(ref string) answer { return e.send(t, b, "GET", "/api/v1/folders?parent_id="+ref, "", nil) }, folder},
		{"audit of A's document", func(ref string) answer { return e.send(t, b, "GET", "/api/v1/audit?document_id="+ref, "", nil) }, doc},
		{"audit of A's topic", func(ref string) answer { return e.send(t, b, "GET", "/api/v1/audit?document_id="+ref, "", nil) }, topic},
		{"anonymous: upload into A's topic", func(ref string) answer {
			return e.uploadForm(t, anonymous, "%PDF-1.4 n1", "topic_id", ref)
		}, topic},
		{"anonymous: list documents in A's folder", func(ref string) answer {
			return e.send(t, anonymous, "GET", "/api/v1/documents?folder_id="+ref, "", nil)
		}, folder},
		{"default user: upload into A's topic", func(ref string) answer {
			return e.uploadForm(t, principal{}, "%PDF-1.4 d1", "topic_id", ref)
		}, topic},
		{"admin: upload into A's topic (the document would be the admin's)", func(ref string) answer {
			return e.uploadForm(t, admin, "%PDF-1.4 r1", "topic_id", ref)
		}, topic},
		{"admin: create a folder of theirs under A's", func(ref string) answer {
			return e.sendJSON(t, admin, "POST", "/api/v1/folders", `{"name":"root's","parent_id":"`+ref+`"}`)
		}, folder},
	}
	for _, c := range refCases {
		want, got := c.send(unknown), c.send(c.own)
		if want.status >= 500 || want.status < 200 {
			t.Errorf("%s, unknown id: %d %s", c.name, want.status, want.body)
		}
		sameAnswer(t, c.name, got, c.own, want, unknown)
	}

	// B's lists hold nothing of A's; an anonymous request gets none.
	for _, p := range []principal{b, anonymous} {
		for _, path := range []string{"/api/v1/documents", "/api/v1/documents?status=ready", "/api/v1/topics",
			"/api/v1/folders", "/api/v1/cloud-connections", "/api/v1/audit", "/api/v1/audit?type=document.uploaded"} {
			got := e.send(t, p, "GET", path, "", nil)
			if want := map[bool]int{false: 200, true: 401}[p.anonymous]; got.status != want {
				t.Errorf("GET %s (anonymous %v): %d %s; want %d", path, p.anonymous, got.status, got.body, want)
			}
			for _, id := range []string{doc, topic, folder, sub, conn, alice.String()} {
				if strings.Contains(got.body, id) {
					t.Errorf("GET %s (as %v) shows A's %s: %s", path, p.id, id, got.body)
				}
			}
		}
	}

	// A refused upload removes its staged bytes once it has answered:
	// give that a moment.
	var after map[string]string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if after = e.snapshot(t); maps.Equal(before, after) || time.Now().After(deadline) {
			break
		}
	}
	for k := range before {
		if before[k] != after[k] {
			t.Errorf("%s changed: %s -> %s", k, before[k], after[k])
		}
	}

	// B's own audit trail shows B's resources, nothing of A's.
	if got := e.send(t, b, "GET", "/api/v1/audit", "", nil); len(got.json(t)["items"].([]any)) != 3 {
		t.Errorf("B's audit: %s; want B's folder, topic and upload", got.body)
	}

	// An administrator sees A's resources and may change them.
	for _, path := range []string{"/api/v1/documents/" + doc, "/api/v1/documents/" + doc + "/content",
		"/api/v1/topics/" + topic, "/api/v1/folders/" + folder, "/api/v1/cloud-connections/" + conn} {
		if got := e.send(t, admin, "GET", path, "", nil); got.status != 200 {
			t.Errorf("admin: GET %s: %d %s", path, got.status, got.body)
		}
	}
	for _, path := range []string{"/api/v1/documents?topic_id=" + topic, "/api/v1/audit?document_id=" + doc,
		"/api/v1/folders?parent_id=" + folder, "/api/v1/topics", "/api/v1/cloud-connections"} {
		if got := e.send(t, admin, "GET", path, "", nil); got.status != 200 || len(got.json(t)["items"].([]any)) == 0 {
			t.Errorf("admin: GET %s: %d %s; want A's items", path, got.status, got.body)
		}
	}
	got := e.sendJSON(t, admin, "PATCH", "/api/v1/topics/"+topic, `{"name":"Taxes (checked)"}`)
	if got.status != 200 || got.json(t)["user_id"] != alice.String() {
		t.Errorf("admin renames A's topic: %d %s; want 200, still A's", got.status, got.body)
	}
	// Moving A's subfolder under A's other folder is fine; under the
	// admin's own folder, it is not (a tree has one owner).
	other := created(t, "A's second folder", e.sendJSON(t, a, "POST", "/api/v1/folders", `{"name":"Receipts"}`))
	if got := e.sendJSON(t, admin, "PATCH", "/api/v1/folders/"+sub, `{"parent_id":"`+other+`"}`); got.status != 200 {
		t.Errorf("admin moves A's folder within A's tree: %d %s", got.status, got.body)
	}
	rootFolder := created(t, "admin's folder", e.sendJSON(t, admin, "POST", "/api/v1/folders", `{"name":"Root's"}`))
	if got := e.sendJSON(t, admin, "PATCH", "/api/v1/folders/"+sub, `{"parent_id":"`+rootFolder+`"}`); got.status != 422 {
		t.Errorf("admin moves A's folder under the admin's: %d %s; want 422 unknown folder", got.status, got.body)
	}
	got = e.sendJSON(t, admin, "POST", "/api/v1/topics", `{"name":"Admin's own"}`)
	if got.status != 201 || got.json(t)["user_id"] != root.String() {
		t.Errorf("admin creates a topic: %d %s; want 201, the admin's", got.status, got.body)
	}

	// A still has everything, and can delete it.
	for _, path := range []string{"/api/v1/documents/" + doc, "/api/v1/topics/" + topic,
		"/api/v1/cloud-connections/" + conn} {
		if got := e.send(t, a, "DELETE", path, "", nil); got.status != 204 {
			t.Errorf("A: DELETE %s: %d %s", path, got.status, got.body)
		}
	}
}

// The audit log shows a user the rows about their own resources, whoever
// wrote them (the user, an administrator, the pipeline), also once the
// resource is gone; nothing of another user's; an administrator sees
// every row; a request without a token none (401).
func TestAuditIsScopedToTheOwnersResources(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{Quota: store.QuotaLimits{Bytes: 1 << 20, Documents: 100}})
	ctx := context.Background()
	alice, bob, root := e.newUser(t), e.newUser(t), e.newUser(t)
	a, b, admin := userP(alice), userP(bob), adminP(root)

	doc := created(t, "document", e.uploadForm(t, a, "%PDF-1.4 audited"))
	topic := created(t, "topic", e.sendJSON(t, a, "POST", "/api/v1/topics", `{"name":"Short-lived"}`))
	if got := e.sendJSON(t, a, "DELETE", "/api/v1/topics/"+topic, ""); got.status != 204 {
		t.Fatalf("A deletes the topic: %d %s", got.status, got.body)
	}
	if got := e.sendJSON(t, admin, "DELETE", "/api/v1/documents/"+doc, ""); got.status != 204 {
		t.Fatalf("admin deletes A's document: %d %s", got.status, got.body)
	}
	carol := userP(e.user) // the env's default user
	carols := created(t, "the default user's document", e.uploadForm(t, principal{}, "%PDF-1.4 carol's"))
	// What the pipeline and the accounts write: a cloud copy of A's
	// document (its data names no owner), A's login, and an event about
	// an aggregate no rule knows (nobody's but the administrators').
	err := store.WithTx(ctx, e.admin, func(tx pgx.Tx) error {
		for _, ev := range []struct {
			typ, aggType string
			id           uuid.UUID
			data         any
		}{
			{events.CloudSyncCompleted, "document", uuid.MustParse(doc), map[string]any{"document_id": doc}},
			{"user.logged_in", "user", alice, map[string]any{"user_id": alice}},
			{"session.swept", "session", uuid.Must(uuid.NewV7()), map[string]any{}},
		} {
			env, err := events.New(ev.typ, ev.aggType, ev.id, events.System, uuid.Must(uuid.NewV7()), nil, ev.data)
			if err != nil {
				return err
			}
			if err := store.Record(ctx, tx, env, store.Origin{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	types := func(p principal, query string) []string {
		t.Helper()
		got := e.send(t, p, "GET", "/api/v1/audit"+query, "", nil)
		if got.status != 200 {
			t.Fatalf("GET /api/v1/audit%s: %d %s", query, got.status, got.body)
		}
		var page auditPage
		if err := json.Unmarshal([]byte(got.body), &page); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ev := range page.Items {
			out = append(out, ev.Type)
			if ev.Type == events.DocumentDeleted && (ev.Actor.ID == nil || *ev.Actor.ID != root) {
				t.Errorf("document.deleted actor %+v; want the administrator", ev.Actor)
			}
		}
		return out
	}
	for _, c := range []struct {
		name  string
		p     principal
		query string
		want  []string
	}{
		{"A", a, "", []string{"document.uploaded", "topic.created", "topic.deleted", "document.deleted",
			"cloud_sync.completed", "user.logged_in"}},
		{"A, one document", a, "?document_id=" + doc, []string{"document.uploaded", "document.deleted", "cloud_sync.completed"}},
		{"B", b, "", nil},
		{"B, A's document", b, "?document_id=" + doc, nil},
		{"the default user", carol, "", []string{"document.uploaded"}},
		{"admin", admin, "", []string{"document.uploaded", "topic.created", "topic.deleted", "document.deleted",
			"document.uploaded", "cloud_sync.completed", "user.logged_in", "session.swept"}},
	} {
		if got := types(c.p, c.query); !slices.Equal(got, c.want) {
			t.Errorf("%s: audit %v; want %v", c.name, got, c.want)
		}
	}
	if got := e.send(t, carol, "GET", "/api/v1/audit?document_id="+carols, "", nil); !strings.Contains(got.body, carols) {
		t.Errorf("the default user, its document: %s", got.body)
	}
	for _, query := range []string{"", "?document_id=" + carols, "?document_id=" + doc} {
		if got := e.send(t, anonymous, "GET", "/api/v1/audit"+query, "", nil); got.status != 401 || strings.Contains(got.body, "document.uploaded") {
			t.Errorf("anonymous: GET /api/v1/audit%s: %d %s; want 401", query, got.status, got.body)
		}
	}
}
