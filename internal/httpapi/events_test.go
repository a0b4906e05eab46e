package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/store"
)

// as sends a request acting for owner (the env's default user when nil), with headers,
// and returns the status and the JSON object answered.
func as(t *testing.T, owner *uuid.UUID, method, url, contentType string, body []byte, headers ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if owner != nil {
		req.Header.Set("X-Test-Owner", owner.String())
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// uploadWith uploads a small file with the form fields given (name, value
// pairs) and returns the new document's id.
func (e *env) uploadWith(t *testing.T, owner *uuid.UUID, content string, fields ...string) string {
	t.Helper()
	parts := []part{{header: fileHeader("a.pdf"), body: []byte(content)}}
	for i := 0; i+1 < len(fields); i += 2 {
		parts = append(parts, part{header: fieldHeader(fields[i]), body: []byte(fields[i+1])})
	}
	status, doc := as(t, owner, http.MethodPost, e.srv.URL+"/api/v1/documents", mpType, multipartBody(boundary, parts...))
	if status != http.StatusAccepted {
		t.Fatalf("upload: %d %v", status, doc)
	}
	return doc["id"].(string)
}

// outboxEvent is one event in the outbox (nothing publishes it in these
// tests).
type outboxEvent struct {
	id  int64 // outbox id: the order the relay publishes in
	env events.Envelope
}

// outbox returns every event in the outbox, by outbox id, and fails the
// test for any that does not match its JSON Schema.
func (e *env) outbox(t *testing.T) []outboxEvent {
	t.Helper()
	rows, err := e.admin.Query(context.Background(), `select id, payload::text from outbox order by id`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		ID      int64
		Payload string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]outboxEvent, 0, len(got))
	for _, r := range got {
		if err := events.Validate([]byte(r.Payload)); err != nil {
			t.Errorf("outbox %d: %v\n%s", r.ID, err, r.Payload)
		}
		var ev events.Envelope
		if err := json.Unmarshal([]byte(r.Payload), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, outboxEvent{id: r.ID, env: ev})
	}
	return out
}

func ofType(evs []outboxEvent, typ string) []outboxEvent {
	var out []outboxEvent
	for _, e := range evs {
		if e.env.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// Every event a request causes has the request's actor: the user it acts
// for. Its audit row says the same.
func TestEventsHaveTheRequestsActor(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"default user", "user"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, httpapi.Config{Quota: store.QuotaLimits{Bytes: 1 << 20, Documents: 100}})
			want := events.Actor{Type: "user", ID: &e.user}
			var owner *uuid.UUID
			if name == "user" {
				id := e.newUser(t)
				owner, want = &id, events.Actor{Type: "user", ID: &id}
			}
			base := e.srv.URL + "/api/v1"
			const ct = "application/json"
			must := func(wantStatus int, method, path, body string) map[string]any {
				t.Helper()
				status, out := as(t, owner, method, base+path, ct, []byte(body))
				if status != wantStatus {
					t.Fatalf("%s %s: %d %v; want %d", method, path, status, out, wantStatus)
				}
				return out
			}
			topic := must(201, "POST", "/topics", `{"name":"Taxes"}`)["id"].(string)
			must(200, "PATCH", "/topics/"+topic, `{"name":"Taxes 2026"}`)
			folder := must(201, "POST", "/folders", `{"name":"Invoices"}`)["id"].(string)
			must(200, "PATCH", "/folders/"+folder, `{"name":"Invoices 2026"}`)
			doc := e.uploadWith(t, owner, "%PDF-1.4 actor", "topic_id", topic, "folder_id", folder)
			must(204, "DELETE", "/topics/"+topic, "")
			must(204, "DELETE", "/folders/"+folder, "")
			must(204, "DELETE", "/documents/"+doc, "")

			evs := e.outbox(t)
			var types []string
			for _, ev := range evs {
				types = append(types, ev.env.Type)
				if a := ev.env.Actor; a.Type != want.Type || (a.ID == nil) != (want.ID == nil) || a.ID != nil && *a.ID != *want.ID {
					t.Errorf("%s: actor %+v; want %+v", ev.env.Type, a, want)
				}
			}
			wantTypes := []string{events.TopicCreated, events.TopicRenamed, events.FolderCreated, events.FolderUpdated,
				events.DocumentUploaded, events.TopicDeleted, events.DocumentUpdated, events.FolderDeleted, events.DocumentUpdated,
				events.DocumentDeleted}
			if !slices.Equal(types, wantTypes) {
				t.Errorf("events %v; want %v", types, wantTypes)
			}
			var wrong int
			if err := e.admin.QueryRow(context.Background(), `select count(*) from audit_log
				where actor_type <> $1 or actor_id is distinct from $2`, want.Type, want.ID).Scan(&wrong); err != nil {
				t.Fatal(err)
			}
			if wrong != 0 {
				t.Errorf("%d audit rows with another actor than %+v", wrong, want)
			}
		})
	}
}

// Deleting a topic or folder takes it off its documents, and each
// document (but the deleted ones) gets a document.updated in the same
// transaction: the document as it is now, caused by the deletion, after
// the document's earlier events.
func TestDeletingATopicOrFolderUpdatesItsDocuments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	ctx := context.Background()
	base := e.srv.URL + "/api/v1"
	create := func(path, name string) string {
		t.Helper()
		status, out := call(t, "POST", base+path, `{"name":"`+name+`"}`)
		if status != 201 {
			t.Fatalf("create %s: %d %v", name, status, out)
		}
		return out["id"].(string)
	}
	topic, other, folder := create("/topics", "Taxes"), create("/topics", "Other"), create("/folders", "Invoices")
	a := e.uploadWith(t, nil, "%PDF-1.4 a", "topic_id", topic, "folder_id", folder)
	b := e.uploadWith(t, nil, "%PDF-1.4 b", "topic_id", topic)
	c := e.uploadWith(t, nil, "%PDF-1.4 c", "topic_id", other, "folder_id", folder)
	d := e.uploadWith(t, nil, "%PDF-1.4 d", "topic_id", topic)
	if status, _ := call(t, "DELETE", base+"/documents/"+d, ""); status != 204 {
		t.Fatalf("delete d: %d", status)
	}

	// The updates of one deletion: their documents, data and cause.
	updates := func(deletedType, deletedID string, corr uuid.UUID) map[string]events.Document {
		t.Helper()
		evs := e.outbox(t)
		deleted := ofType(evs, deletedType)
		if len(deleted) != 1 || deleted[0].env.AggregateID.String() != deletedID {
			t.Fatalf("%s events %+v", deletedType, deleted)
		}
		cause := deleted[0].env
		if cause.CorrelationID != corr {
			t.Errorf("%s correlation %s; want the request's %s", deletedType, cause.CorrelationID, corr)
		}
		out := map[string]events.Document{}
		for _, u := range ofType(evs, events.DocumentUpdated) {
			if u.env.CausationID == nil || *u.env.CausationID != cause.ID {
				continue // another deletion's
			}
			var data events.Document
			if err := json.Unmarshal(u.env.Data, &data); err != nil {
				t.Fatal(err)
			}
			id := u.env.AggregateID.String()
			if data.ID != u.env.AggregateID || u.env.CorrelationID != corr || u.id < deleted[0].id {
				t.Errorf("document.updated %+v (outbox %d); want about its data, correlation %s, after its cause (outbox %d)",
					u.env, u.id, corr, deleted[0].id)
			}
			for _, earlier := range evs {
				if earlier.env.AggregateID == u.env.AggregateID && earlier.env.Type == events.DocumentUploaded && earlier.id > u.id {
					t.Errorf("document.updated of %s is before its document.uploaded", id)
				}
			}
			if _, dup := out[id]; dup {
				t.Errorf("two document.updated of %s", id)
			}
			out[id] = data
		}
		return out
	}

	corr := uuid.Must(uuid.NewV7())
	if status, _ := as(t, nil, "DELETE", base+"/topics/"+topic, "", nil, "X-Correlation-ID", corr.String()); status != 204 {
		t.Fatalf("delete topic: %d", status)
	}
	got := updates(events.TopicDeleted, topic, corr)
	if len(got) != 2 {
		t.Fatalf("document.updated of %v; want %s and %s (not %s: deleted, nor %s: other topic)", got, a, b, d, c)
	}
	if da := got[a]; da.TopicID != nil || da.FolderID == nil || da.FolderID.String() != folder || da.Status != "pending" {
		t.Errorf("document.updated of a: %+v; want no topic, still in its folder", da)
	}
	if db := got[b]; db.TopicID != nil || db.FolderID != nil {
		t.Errorf("document.updated of b: %+v; want no topic", db)
	}
	var left int
	if err := e.admin.QueryRow(ctx, `select count(*) from documents where topic_id is not null and topic_id <> $1`, other).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d documents (the deleted one included) still name the deleted topic", left)
	}
	if status, got := call(t, "GET", base+"/documents/"+a, ""); status != 200 || got["topic_id"] != nil {
		t.Errorf("GET a: %d %v; want no topic", status, got)
	}

	corr = uuid.Must(uuid.NewV7())
	if status, _ := as(t, nil, "DELETE", base+"/folders/"+folder, "", nil, "X-Correlation-ID", corr.String()); status != 204 {
		t.Fatalf("delete folder: %d", status)
	}
	got = updates(events.FolderDeleted, folder, corr)
	if len(got) != 2 || got[a].FolderID != nil || got[a].TopicID != nil || got[c].FolderID != nil || got[c].TopicID == nil {
		t.Errorf("document.updated after the folder's deletion: %+v; want a and c without folder, c still in its topic", got)
	}

	// A folder with a subfolder is not deleted, and nothing is written.
	parent, before := create("/folders", "Parent"), len(e.outbox(t))
	if status, _ := call(t, "POST", base+"/folders", `{"name":"Child","parent_id":"`+parent+`"}`); status != 201 {
		t.Fatal("create child folder")
	}
	e.uploadWith(t, nil, "%PDF-1.4 e", "folder_id", parent)
	before += 2
	if status, prob := call(t, "DELETE", base+"/folders/"+parent, ""); status != 409 {
		t.Errorf("delete a folder with a subfolder: %d %v; want 409", status, prob)
	}
	if n := len(e.outbox(t)); n != before {
		t.Errorf("%d events after a refused deletion; want %d", n, before)
	}
}

// A topic with many documents is deleted in one request: one statement
// changes them, and their events go in a few batches.
func TestDeletingATopicWithManyDocuments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	ctx := context.Background()
	status, topic := call(t, "POST", e.srv.URL+"/api/v1/topics", `{"name":"Big"}`)
	if status != 201 {
		t.Fatalf("create topic: %d", status)
	}
	const n = 3000
	if _, err := e.admin.Exec(ctx, `insert into documents (id, user_id, topic_id, filename, content_type, size_bytes, sha256, storage_key)
		select id, $3, $1, 'bulk.txt', 'text/plain', 1, sha256(id::text::bytea), 'staging/' || id
		from (select gen_random_uuid() as id from generate_series(1, $2)) ids`, topic["id"], n, e.user); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if status, _ := call(t, "DELETE", e.srv.URL+"/api/v1/topics/"+topic["id"].(string), ""); status != 204 {
		t.Fatalf("delete topic: %d", status)
	}
	t.Logf("deleted a topic of %d documents in %v", n, time.Since(start))
	updated := ofType(e.outbox(t), events.DocumentUpdated)
	seen := map[uuid.UUID]bool{}
	for _, u := range updated {
		seen[u.env.AggregateID] = true
	}
	if len(updated) != n || len(seen) != n {
		t.Errorf("%d document.updated about %d documents; want %d", len(updated), len(seen), n)
	}
	var audited int
	if err := e.admin.QueryRow(ctx, `select count(*) from audit_log where action = $1`, events.DocumentUpdated).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	if audited != n {
		t.Errorf("%d audit rows of document.updated; want %d", audited, n)
	}
}
