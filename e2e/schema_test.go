package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/testenv"
)

// TestEveryEmittedEvent drives the real binaries through a flow that
// emits every event type, then checks every event they wrote against the
// JSON Schema of its type and version (internal/events/schemas): each entry
// of every stream, and each event rebuilt from audit_log (which holds one
// row per event, and outlives the outbox row). It also checks what the
// schemas cannot: each event is on its stream with matching Watermill
// metadata, the audit row and the stream entry are the same event, the
// aggregate id is the data's, and events with a cause name the documented
// one.
func TestEveryEmittedEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dav := testenv.StartWebDAV(t, "docuvault", "dav-password")
	db := testenv.NewDB(t)
	s3 := testenv.S3(t)
	env := testenv.ServiceEnv(t, db, s3)
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	api := start(t, "api", env)
	relay := start(t, "relay", env)
	f := &schemaFlow{t: t, base: "http://" + api.addr("api"), db: testenv.Pool(t, db.AdminDSN())}
	relay.addr("metrics")

	// Accounts: registered and logged in; a refused login; a refresh, then
	// the old refresh token again (its session is revoked); a second
	// session logged out; the password changed (every token ends), and a
	// login with the new one for the rest of the flow.
	user := signIn(t, f.base)
	if code, body := authJSON(t, http.DefaultClient, f.base, "/api/v1/auth/login",
		map[string]string{"email": user.Email, "password": user.Password + " (typo)"}, nil); code != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password: %d %s; want 401", code, body)
	}
	var refreshed tokenPair
	if code, body := authJSON(t, http.DefaultClient, f.base, "/api/v1/auth/refresh", map[string]string{"refresh_token": user.Refresh}, &refreshed); code != http.StatusOK || refreshed.RefreshToken == "" {
		t.Fatalf("refresh: %d %s", code, body)
	}
	if code, body := authJSON(t, http.DefaultClient, f.base, "/api/v1/auth/refresh", map[string]string{"refresh_token": user.Refresh}, nil); code != http.StatusUnauthorized {
		t.Fatalf("refresh with a used token: %d %s; want 401", code, body)
	}
	second := login(t, f.base, user.Email, user.Password)
	session := &http.Client{Transport: withToken(second.AccessToken, nil)}
	if code, body := authJSON(t, session, f.base, "/api/v1/auth/logout", map[string]string{"refresh_token": second.RefreshToken}, nil); code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", code, body)
	}
	_, newPassword := newCredentials()
	if code, body := authJSON(t, session, f.base, "/api/v1/me/password",
		map[string]string{"current_password": user.Password, "new_password": newPassword}, nil); code != http.StatusNoContent {
		t.Fatalf("change password: %d %s", code, body)
	}
	f.client = &http.Client{Transport: withToken(login(t, f.base, user.Email, newPassword).AccessToken, nil)}

	// document.rejected: the staged bytes are gone before the consumer
	// (not started yet) gets to the upload.
	vanished := f.upload("vanishing.txt", []byte("these bytes are removed before finalisation"), nil)
	if err := blobs.Remove(ctx, blob.StagingKey(uuid.MustParse(vanished))); err != nil {
		t.Fatal(err)
	}
	consumer := start(t, "consumer", env)
	consumer.addr("metrics")
	if doc := f.waitDocument(vanished, "rejected status", func(d flowDocument) bool { return d.Status == "rejected" }); doc.RejectReason == nil || *doc.RejectReason != "object_missing" {
		t.Errorf("reject reason %v; want object_missing", doc.RejectReason)
	}

	// Topics and folders: created, renamed, moved (a folder with a parent,
	// then at the root).
	topic := f.call(http.MethodPost, "/api/v1/topics", map[string]any{"name": "Taxes 2026"}, http.StatusCreated)["id"].(string)
	f.call(http.MethodPatch, "/api/v1/topics/"+topic, map[string]any{"name": "Taxes"}, http.StatusOK)
	parent := f.call(http.MethodPost, "/api/v1/folders", map[string]any{"name": "Invoices"}, http.StatusCreated)["id"].(string)
	child := f.call(http.MethodPost, "/api/v1/folders", map[string]any{"name": "2026", "parent_id": parent}, http.StatusCreated)["id"].(string)
	f.call(http.MethodPatch, "/api/v1/folders/"+child, map[string]any{"name": "2026 Q4"}, http.StatusOK)
	f.call(http.MethodPatch, "/api/v1/folders/"+child, map[string]any{"parent_id": nil}, http.StatusOK)

	// A WebDAV connection: every ready document is copied to it.
	conn := f.call(http.MethodPost, "/api/v1/cloud-connections", map[string]any{
		"provider": "webdav", "name": "test dav", "delete_remote": true,
		"settings":    map[string]any{"url": dav.URL, "prefix": "DocuVault"},
		"credentials": map[string]any{"username": dav.User, "password": dav.Password},
	}, http.StatusCreated)["id"].(string)
	synced := func(d flowDocument) bool { return len(d.CloudSync) == 1 && d.CloudSync[0].Status == "synced" }

	// Uploaded, finalized, copied; the same bytes again (duplicate_of),
	// in the topic and folder too (their deletions update it).
	content := make([]byte, 64<<10)
	_, _ = rand.Read(content)
	first := f.upload("Report ü.pdf", content, map[string]string{"title": "Quarterly", "topic_id": topic, "folder_id": child})
	f.waitDocument(first, "ready and copied", synced)
	dup := f.upload("copy.pdf", content, map[string]string{"topic_id": topic, "folder_id": child})
	if doc := f.waitDocument(dup, "ready and copied", synced); doc.DuplicateOf == nil || *doc.DuplicateOf != first {
		t.Errorf("duplicate_of %v; want %s", doc.DuplicateOf, first)
	}

	// Deleted: the remote copy is removed (delete_remote).
	f.call(http.MethodDelete, "/api/v1/documents/"+first, nil, http.StatusNoContent)
	f.waitEvent(events.CloudSyncRemoved, first)

	// A copy that fails for good: the remote is down, and the row is put
	// at its last attempt rather than waiting hours for the backoff.
	dav.SetUnavailable(true)
	other := make([]byte, 10<<10)
	_, _ = rand.Read(other)
	failing := f.upload("notes.txt", other, nil)
	f.waitDocument(failing, "a failed copy attempt", func(d flowDocument) bool {
		return len(d.CloudSync) == 1 && d.CloudSync[0].Status == "pending" && d.CloudSync[0].LastError != nil
	})
	if _, err := f.db.Exec(ctx, `update cloud_sync set attempts = $2, next_attempt_at = now()
		where document_id = $1 and status = 'pending'`, failing, cloudsync.DefaultRetryPolicy.MaxAttempts-1); err != nil {
		t.Fatal(err)
	}
	f.waitDocument(failing, "the copy to fail for good", func(d flowDocument) bool {
		return len(d.CloudSync) == 1 && d.CloudSync[0].Status == "failed"
	})

	// Connection updates: renamed while failing, recovered by a copy now
	// that the remote is back, paused, resumed (which re-queues the
	// failed copy).
	dav.SetUnavailable(false)
	if got := f.call(http.MethodPatch, "/api/v1/cloud-connections/"+conn, map[string]any{"name": "test dav (failing)"}, http.StatusOK); got["status"] != "failing" {
		t.Errorf("connection status %v after a failed copy; want failing", got["status"])
	}
	later := make([]byte, 10<<10)
	_, _ = rand.Read(later)
	f.waitDocument(f.upload("later.txt", later, nil), "ready and copied", synced)
	f.waitEvent(events.CloudConnectionRecovered, conn)
	f.call(http.MethodPatch, "/api/v1/cloud-connections/"+conn, map[string]any{"status": "paused", "delete_remote": false}, http.StatusOK)
	f.call(http.MethodPatch, "/api/v1/cloud-connections/"+conn, map[string]any{"status": "active", "delete_remote": true}, http.StatusOK)
	f.waitDocument(failing, "the re-queued copy", synced)

	// Deletes: a rejected document, the topic, the folders, the connection.
	// The consumer handles the deletion of vanished but writes no event (no
	// copy to remove).
	f.call(http.MethodDelete, "/api/v1/documents/"+vanished, nil, http.StatusNoContent)
	f.call(http.MethodDelete, "/api/v1/topics/"+topic, nil, http.StatusNoContent)
	f.call(http.MethodDelete, "/api/v1/folders/"+child, nil, http.StatusNoContent)
	f.call(http.MethodDelete, "/api/v1/folders/"+parent, nil, http.StatusNoContent)
	f.call(http.MethodDelete, "/api/v1/cloud-connections/"+conn, nil, http.StatusNoContent)
	f.waitEvent(events.DocumentDeleted, vanished)
	// Stop the writers, then let the relay publish what they wrote.
	api.stop()
	consumer.stop()
	eventually(t, 30*time.Second, "the outbox to drain", func() bool {
		var n int
		_ = f.db.QueryRow(ctx, `select count(*) from outbox`).Scan(&n)
		return n == 0
	})
	relay.stop()

	published := f.checkStreams(env["REDIS_URL"])
	recorded := f.checkAuditLog()
	f.checkOutbox()

	// Audit rows and stream entries are the same events.
	for id, a := range recorded {
		p, ok := published[id]
		switch {
		case !ok:
			t.Errorf("%s %s is in audit_log but on no stream", a.env.Type, id)
		case !sameJSON(a.payload, p.payload):
			t.Errorf("%s %s: audit_log gives\n%s\nthe stream has\n%s", a.env.Type, id, a.payload, p.payload)
		}
	}
	for id, p := range published {
		if _, ok := recorded[id]; !ok {
			t.Errorf("%s %s is on %s but not in audit_log", p.env.Type, id, p.where)
		}
	}
	checkCauses(t, published)

	seen := map[string]int{}
	for _, p := range published {
		seen[p.env.Type]++
	}
	var list []string
	for typ, n := range seen {
		list = append(list, fmt.Sprintf("%s×%d", typ, n))
	}
	slices.Sort(list)
	t.Logf("%d events of %d types checked: %s", len(published), len(seen), strings.Join(list, ", "))
	// Every type with a schema (internal/events checks that every type
	// declared has one).
	for _, typ := range schemaTypes(t) {
		if seen[typ] == 0 {
			t.Errorf("the flow emitted no %s", typ)
		}
	}
}

// schemaTypes returns the event types of the schema files in
// internal/events/schemas ({type}.v{version}.json), each once.
func schemaTypes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../internal/events/schemas/*.v*.json")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		name := filepath.Base(f)
		typ := name[:strings.LastIndex(name, ".v")]
		if typ != "common" && !slices.Contains(out, typ) {
			out = append(out, typ)
		}
	}
	if len(out) == 0 {
		t.Fatalf("found only the event types %v in internal/events/schemas", out)
	}
	return out
}

// schemaFlow drives the API of one stack and reads its database.
type schemaFlow struct {
	t      *testing.T
	base   string
	db     *pgxpool.Pool // superuser: reads audit_log and outbox, injects the last attempt
	client *http.Client  // acts for the flow's account
}

// flowDocument is what the flow reads of GET /api/v1/documents/{id}.
type flowDocument struct {
	Status       string  `json:"status"`
	RejectReason *string `json:"reject_reason"`
	DuplicateOf  *string `json:"duplicate_of"`
	CloudSync    []struct {
		Status    string  `json:"status"`
		LastError *string `json:"last_error"`
	} `json:"cloud_sync"`
}

// call sends a JSON request and returns the JSON object answered (nil for
// no body); any other status than want ends the test.
// connectWebDAV creates a cloud connection named name to dav (prefix
// DocuVault) and returns its id.
func (f *schemaFlow) connectWebDAV(dav *testenv.WebDAV, name string) string {
	f.t.Helper()
	return f.call(http.MethodPost, "/api/v1/cloud-connections", map[string]any{
		"provider": "webdav", "name": name,
		"settings":    map[string]any{"url": dav.URL, "prefix": "DocuVault"},
		"credentials": map[string]any{"username": dav.User, "password": dav.Password},
	}, http.StatusCreated)["id"].(string)
}

func (f *schemaFlow) call(method, path string, body any, want int) map[string]any {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.base+path, r)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s: %d %s; want %d", method, path, resp.StatusCode, got, want)
	}
	if len(got) == 0 {
		return nil
	}
	var out map[string]any
	if err := json.Unmarshal(got, &out); err != nil {
		f.t.Fatalf("%s %s: %v: %s", method, path, err, got)
	}
	return out
}

// upload uploads content and returns the new document's id.
func (f *schemaFlow) upload(filename string, content []byte, fields map[string]string) string {
	f.t.Helper()
	resp, body := upload(f.t, f.client, f.base, filename, content, fields, nil)
	if resp.StatusCode != http.StatusAccepted {
		f.t.Fatalf("upload %s: %d %s", filename, resp.StatusCode, body)
	}
	var doc struct{ ID string }
	if err := json.Unmarshal(body, &doc); err != nil {
		f.t.Fatal(err)
	}
	return doc.ID
}

// waitDocument polls document id until cond holds (bounded) and returns it.
func (f *schemaFlow) waitDocument(id, what string, cond func(flowDocument) bool) flowDocument {
	f.t.Helper()
	var doc flowDocument
	eventually(f.t, 60*time.Second, "document "+id+": "+what, func() bool {
		doc = flowDocument{}
		return getJSON(f.t, f.client, f.base+"/api/v1/documents/"+id, &doc) == http.StatusOK && cond(doc)
	})
	return doc
}

// waitEvent waits (bounded) until an event typ about aggregate id is
// written.
func (f *schemaFlow) waitEvent(typ, id string) {
	f.t.Helper()
	eventually(f.t, 60*time.Second, typ+" of "+id, func() bool {
		var n int
		_ = f.db.QueryRow(context.Background(), `select count(*) from audit_log where action = $1 and aggregate_id = $2`, typ, id).Scan(&n)
		return n > 0
	})
}

// flowEvent is one event as found somewhere.
type flowEvent struct {
	where   string // stream name and entry id, or audit_log
	payload []byte
	env     events.Envelope
}

// checkStreams validates every entry of every stream (and the dead
// letters, which should be none) and returns the events by id.
func (f *schemaFlow) checkStreams(redisURL string) map[uuid.UUID]flowEvent {
	t := f.t
	rdb := testenv.RedisClient(t, redisURL)
	out := map[uuid.UUID]flowEvent{}
	for _, stream := range append(slices.Clone(events.Streams), "docuvault.dead_letter") {
		entries, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if stream == "docuvault.dead_letter" && len(entries) > 0 {
			t.Errorf("%d dead letters: a consumer failed on an event of this flow", len(entries))
		}
		for _, e := range entries {
			where := stream + " " + e.ID
			msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
			if err != nil {
				t.Errorf("%s: not a Watermill message: %v", where, err)
				continue
			}
			if err := events.Validate(msg.Payload); err != nil {
				t.Errorf("%s: %v\n%s", where, err, msg.Payload)
			}
			var env events.Envelope
			if err := json.Unmarshal(msg.Payload, &env); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if stream == "docuvault.dead_letter" {
				continue
			}
			if env.Stream() != stream && stream != events.StreamAudit {
				t.Errorf("%s: %s belongs on %s", where, env.Type, env.Stream())
			}
			md := msg.Metadata
			if msg.UUID != env.ID.String() || md.Get(events.MetaType) != env.Type || md.Get(events.MetaVersion) != strconv.Itoa(env.Version) ||
				md.Get(events.MetaAggregateID) != env.AggregateID.String() || md.Get(events.MetaCorrelationID) != env.CorrelationID.String() {
				t.Errorf("%s: message uuid %s, metadata %v do not match the envelope %s", where, msg.UUID, md, msg.Payload)
			}
			checkAggregate(t, where, env)
			if prev, dup := out[env.ID]; dup {
				// At least once: a duplicate is allowed, but it is the same event.
				if !sameJSON(prev.payload, msg.Payload) {
					t.Errorf("%s: event %s also at %s with another payload", where, env.ID, prev.where)
				}
				continue
			}
			out[env.ID] = flowEvent{where: where, payload: msg.Payload, env: env}
		}
	}
	return out
}

// checkAuditLog rebuilds every event from its audit row, as
// store.RequeueStuckUploads does (the row has no version column: every
// type is at events.Version), validates it and returns the events by id.
func (f *schemaFlow) checkAuditLog() map[uuid.UUID]flowEvent {
	t := f.t
	rows, err := f.db.Query(context.Background(), `select occurred_at, actor_type, actor_id, action, aggregate_type,
			aggregate_id, event_id, correlation_id, causation_id, details::text
		from audit_log order by id`)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (events.Envelope, error) {
		ev := events.Envelope{Version: events.Version}
		var eventID, corr *uuid.UUID
		var data string
		err := row.Scan(&ev.OccurredAt, &ev.Actor.Type, &ev.Actor.ID, &ev.Type, &ev.AggregateType, &ev.AggregateID,
			&eventID, &corr, &ev.CausationID, &data)
		if eventID != nil {
			ev.ID = *eventID
		}
		if corr != nil {
			ev.CorrelationID = *corr
		}
		ev.OccurredAt, ev.Data = ev.OccurredAt.UTC(), json.RawMessage(data)
		return ev, err
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]flowEvent{}
	for _, ev := range evs {
		payload, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		where := "audit_log " + ev.Type + " " + ev.ID.String()
		if err := events.Validate(payload); err != nil {
			t.Errorf("%s: %v\n%s", where, err, payload)
		}
		checkAggregate(t, where, ev)
		if _, dup := out[ev.ID]; dup {
			t.Errorf("%s: two audit rows", where)
		}
		out[ev.ID] = flowEvent{where: where, payload: payload, env: ev}
	}
	return out
}

// checkOutbox validates the rows still in the outbox (none once the relay
// has drained it; they are the stream payloads before publication).
func (f *schemaFlow) checkOutbox() {
	rows, err := f.db.Query(context.Background(), `select event_type, payload::text from outbox order by id`)
	if err != nil {
		f.t.Fatal(err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ Type, Payload string }])
	if err != nil {
		f.t.Fatal(err)
	}
	for _, r := range left {
		if err := events.Validate([]byte(r.Payload)); err != nil {
			f.t.Errorf("outbox %s: %v\n%s", r.Type, err, r.Payload)
		}
	}
}

// checkAggregate checks that the event's aggregate is the one its data
// describes (the schemas cannot compare two values).
func checkAggregate(t *testing.T, where string, ev events.Envelope) {
	t.Helper()
	var data struct {
		ID         *uuid.UUID `json:"id"`
		DocumentID *uuid.UUID `json:"document_id"`
	}
	_ = json.Unmarshal(ev.Data, &data)
	id := data.ID
	if strings.HasPrefix(ev.Type, "cloud_sync.") {
		id = data.DocumentID
	}
	if id == nil || *id != ev.AggregateID {
		t.Errorf("%s: aggregate_id %s but the data is about %v", where, ev.AggregateID, id)
	}
}

// checkCauses checks the documented causation of events that have one:
// the event they name was published, is of the documented type, is about
// the same aggregate (or, for a connection's status change, about a sync
// on that connection), and shares their correlation id.
func checkCauses(t *testing.T, evs map[uuid.UUID]flowEvent) {
	t.Helper()
	causes := map[string][]string{
		events.DocumentFinalized:  {events.DocumentUploaded},
		events.DocumentRejected:   {events.DocumentUploaded},
		events.CloudSyncCompleted: {events.DocumentFinalized},
		events.CloudSyncRemoved:   {events.DocumentDeleted},
		events.CloudSyncFailed:    {events.DocumentFinalized, events.DocumentDeleted},
		// Caused by another aggregate's event.
		events.DocumentUpdated:          {events.TopicDeleted, events.FolderDeleted},
		events.CloudConnectionFailing:   {events.CloudSyncFailed},
		events.CloudConnectionRecovered: {events.CloudSyncCompleted},
	}
	// causeAggregate is the aggregate e's cause c must be about.
	causeAggregate := func(e, c flowEvent) uuid.UUID {
		switch e.env.Type {
		case events.DocumentUpdated:
			return c.env.AggregateID // the topic or folder: the document's data no longer names it
		case events.CloudConnectionFailing, events.CloudConnectionRecovered:
			var sync events.CloudSync
			_ = json.Unmarshal(c.env.Data, &sync)
			if sync.ConnectionID == e.env.AggregateID {
				return c.env.AggregateID
			}
			return uuid.Nil
		}
		return e.env.AggregateID
	}
	for _, e := range evs {
		want, pipeline := causes[e.env.Type]
		if !pipeline {
			continue
		}
		if e.env.CausationID == nil {
			t.Errorf("%s %s has no causation_id", e.env.Type, e.env.ID)
			continue
		}
		c, ok := evs[*e.env.CausationID]
		switch {
		case !ok:
			t.Errorf("%s %s: its cause %s was not published", e.env.Type, e.env.ID, e.env.CausationID)
		case !slices.Contains(want, c.env.Type) || c.env.AggregateID != causeAggregate(e, c):
			t.Errorf("%s %s of %s is caused by %s of %s; want one of %v of the same aggregate (a sync on the same connection)",
				e.env.Type, e.env.ID, e.env.AggregateID, c.env.Type, c.env.AggregateID, want)
		case c.env.CorrelationID != e.env.CorrelationID:
			t.Errorf("%s %s has correlation %s; its cause has %s", e.env.Type, e.env.ID, e.env.CorrelationID, c.env.CorrelationID)
		}
	}
}

// sameJSON reports whether a and b are the same JSON value, whatever the
// order of keys and the spacing (audit_log and the outbox keep jsonb).
func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
