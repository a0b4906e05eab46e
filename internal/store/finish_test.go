package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// The one-statement charged finish applies all of its effects or none:
// not when the document changed since it was read (its topic here), not
// when it does not fit the quota, not without the owner's quota row, not
// twice for one event.
func TestFinishChargedAppliesAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	app := testenv.Pool(t, db.AppURL)
	admin := testenv.Pool(t, db.AdminDSN())
	user := testenv.User(t, admin, "")
	topic := uuid.Must(uuid.NewV7())
	if _, err := admin.Exec(ctx, `insert into topics (id, user_id, name) values ($1, $2, 'T')`, topic, user); err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7())
	sum := sha256.Sum256([]byte("x"))
	doc := store.Document{ID: id, UserID: &user, TopicID: &topic, Filename: "a", ContentType: "text/plain",
		SizeBytes: 100, SHA256: sum[:], StorageKey: "staging/" + id.String()}
	up, err := events.New(events.DocumentUploaded, "document", id, events.Anonymous, uuid.Must(uuid.NewV7()), nil, doc.EventData())
	if err != nil {
		t.Fatal(err)
	}
	if doc, err = store.InsertUpload(ctx, app, doc, up, store.Origin{}); err != nil {
		t.Fatal(err)
	}
	key := "users/" + user.String() + "/documents/" + id.String()
	out, err := events.New(events.DocumentFinalized, "document", id, events.System, up.CorrelationID, &up, doc.EventData())
	if err != nil {
		t.Fatal(err)
	}
	limits := store.QuotaLimits{Bytes: 1000, Documents: 10}
	finish := func(d store.Document, l store.QuotaLimits) store.ChargedOutcome {
		t.Helper()
		o, err := store.FinishChargedAndRecord(ctx, app, "test", up.ID, d, key, l, out, store.Origin{})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	state := func() (status string, used int64, handled, events int) {
		t.Helper()
		if err := admin.QueryRow(ctx, `select (select status from documents where id = $1),
			coalesce((select used_bytes from quotas where user_id = $2), 0),
			(select count(*) from processed_events where event_id = $3),
			(select count(*) from outbox where event_type = 'document.finalized')`, id, user, up.ID).Scan(&status, &used, &handled, &events); err != nil {
			t.Fatal(err)
		}
		return
	}
	unchanged := func(what string) {
		t.Helper()
		if s, u, h, e := state(); s != "pending" || u != 0 || h != 0 || e != 0 {
			t.Fatalf("%s changed something: %s, used %d, handled %d, events %d", what, s, u, h, e)
		}
	}

	if o := finish(doc, limits); o != store.ChargeNoRow {
		t.Fatalf("without a quota row: %v", o)
	}
	unchanged("no quota row")
	if err := store.EnsureQuotaRow(ctx, app, user); err != nil {
		t.Fatal(err)
	}
	if o := finish(doc, store.QuotaLimits{Bytes: 99, Documents: 10}); o != store.ChargeRefused {
		t.Fatalf("over the byte limit: %v", o)
	}
	unchanged("over the quota")
	stale := doc
	stale.TopicID = nil
	if o := finish(stale, limits); o != store.ChargeNotApplied {
		t.Fatalf("changed since read: %v", o)
	}
	unchanged("a changed document")
	if o := finish(doc, limits); o != store.Charged {
		t.Fatalf("as read: %v", o)
	}
	if s, u, h, e := state(); s != "ready" || u != 100 || h != 1 || e != 1 {
		t.Fatalf("after the finish: %s, used %d, handled %d, events %d", s, u, h, e)
	}
	if o := finish(doc, limits); o != store.ChargeNotApplied {
		t.Fatalf("again: %v", o)
	}
	if _, u, h, e := state(); u != 100 || h != 1 || e != 1 {
		t.Fatalf("a second finish charged or recorded again: used %d, handled %d, events %d", u, h, e)
	}
}

// The group finish applies, per owner, all of the owner's documents or
// none: an owner whose documents do not all fit, or who has no quota row,
// gets nothing; a document changed since it was read or already handled
// is left out; the others are each marked ready, handled, charged once
// and recorded with their audit row and event. A second run changes
// nothing.
func TestFinishChargedManyAppliesPerOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	app := testenv.Pool(t, db.AppURL)
	admin := testenv.Pool(t, db.AdminDSN())
	roomy, tight, rowless := testenv.User(t, admin, ""), testenv.User(t, admin, ""), testenv.User(t, admin, "")
	for _, u := range []uuid.UUID{roomy, tight} {
		if err := store.EnsureQuotaRow(ctx, app, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.SetQuotaLimits(ctx, app, tight, ptr(int64(250)), nil); err != nil {
		t.Fatal(err)
	}
	topic := uuid.Must(uuid.NewV7())
	if _, err := admin.Exec(ctx, `insert into topics (id, user_id, name) values ($1, $2, 'T')`, topic, roomy); err != nil {
		t.Fatal(err)
	}
	item := func(owner uuid.UUID, size int64, topicID *uuid.UUID) store.ChargedFinish {
		t.Helper()
		id := uuid.Must(uuid.NewV7())
		sum := sha256.Sum256(id[:])
		doc := store.Document{ID: id, UserID: &owner, TopicID: topicID, Filename: "a", ContentType: "text/plain",
			SizeBytes: size, SHA256: sum[:], StorageKey: "staging/" + id.String()}
		up, err := events.New(events.DocumentUploaded, "document", id, events.Anonymous, uuid.Must(uuid.NewV7()), nil, doc.EventData())
		if err != nil {
			t.Fatal(err)
		}
		if doc, err = store.InsertUpload(ctx, app, doc, up, store.Origin{}); err != nil {
			t.Fatal(err)
		}
		key := "users/" + owner.String() + "/documents/" + id.String()
		ready := doc
		ready.Status, ready.StorageKey = store.StatusReady, key
		out, err := events.New(events.DocumentFinalized, "document", id, events.System, up.CorrelationID, &up, ready.EventData())
		if err != nil {
			t.Fatal(err)
		}
		return store.ChargedFinish{EventID: up.ID, Doc: doc, FinalKey: key, Out: out, Origin: store.Origin{RequestID: "req-1"}}
	}
	a1, a2 := item(roomy, 100, nil), item(roomy, 200, &topic)
	stale := item(roomy, 300, &topic)
	stale.Doc.TopicID = nil // as if read before its topic was set
	handled := item(roomy, 400, nil)
	if _, err := admin.Exec(ctx, `insert into processed_events (consumer, event_id) values ('finalize', $1)`, handled.EventID); err != nil {
		t.Fatal(err)
	}
	t1, t2 := item(tight, 200, nil), item(tight, 100, nil) // 300 > 250: neither
	r1 := item(rowless, 10, nil)
	items := []store.ChargedFinish{a1, a2, stale, handled, t1, t2, r1}
	limits := store.QuotaLimits{Bytes: 1 << 30, Documents: 1000}

	finish := func() map[uuid.UUID]bool {
		t.Helper()
		batch := &pgx.Batch{}
		read, err := store.QueueFinishChargedMany(batch, "finalize", items, limits)
		if err != nil {
			t.Fatal(err)
		}
		results := app.SendBatch(ctx, batch)
		applied, err := read(results)
		if err := errors.Join(err, results.Close()); err != nil {
			t.Fatal(err)
		}
		return applied
	}
	applied := finish()
	if len(applied) != 2 || !applied[a1.Doc.ID] || !applied[a2.Doc.ID] {
		t.Fatalf("applied %v; want exactly the roomy owner's two current, unhandled documents", applied)
	}
	for _, it := range items {
		var status string
		var key string
		var audit, outbox, marks int
		if err := admin.QueryRow(ctx, `select status, storage_key,
				(select count(*) from audit_log where event_id = $2 and action = 'document.finalized' and request_id = 'req-1'),
				(select count(*) from outbox where event_id = $2 and payload->>'causation_id' = $4),
				(select count(*) from processed_events where consumer = 'finalize' and event_id = $3)
			from documents where id = $1`, it.Doc.ID, it.Out.ID, it.EventID, it.EventID.String()).Scan(&status, &key, &audit, &outbox, &marks); err != nil {
			t.Fatal(err)
		}
		want := applied[it.Doc.ID]
		if (status == store.StatusReady) != want || (key == it.FinalKey) != want || (audit == 1) != want || (outbox == 1) != want {
			t.Errorf("document of %d bytes: %s at %s, %d audit rows, %d events; applied %v", it.Doc.SizeBytes, status, key, audit, outbox, want)
		}
		if want {
			// The payload is stored as Go wrote it (a json column, not
			// re-serialised), as the one-document path stores it.
			var payload string
			if err := admin.QueryRow(ctx, `select payload::text from outbox where event_id = $1`, it.Out.ID).Scan(&payload); err != nil {
				t.Fatal(err)
			}
			if encoded, _ := json.Marshal(it.Out); payload != string(encoded) {
				t.Errorf("outbox payload %s; want the encoded event %s", payload, encoded)
			}
		}
		if wantMarks := map[bool]int{true: 1, false: 0}[want || it.EventID == handled.EventID]; marks != wantMarks {
			t.Errorf("document of %d bytes: %d processed marks; want %d", it.Doc.SizeBytes, marks, wantMarks)
		}
	}
	usage := func(u uuid.UUID) (bytes, docs int64) {
		t.Helper()
		_ = admin.QueryRow(ctx, `select used_bytes, used_documents from quotas where user_id = $1`, u).Scan(&bytes, &docs)
		return
	}
	if b, d := usage(roomy); b != 300 || d != 2 {
		t.Errorf("roomy owner charged %d bytes, %d documents; want 300, 2", b, d)
	}
	if b, d := usage(tight); b != 0 || d != 0 {
		t.Errorf("tight owner charged %d bytes, %d documents; want nothing", b, d)
	}
	if again := finish(); len(again) != 0 {
		t.Errorf("a second run applied %v", again)
	}
	if b, d := usage(roomy); b != 300 || d != 2 {
		t.Errorf("after a second run the roomy owner is charged %d bytes, %d documents; want 300, 2", b, d)
	}
}

func ptr[T any](v T) *T { return &v }
