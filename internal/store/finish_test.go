package store_test

import (
	"context"
	"crypto/sha256"
	"testing"

	"github.com/google/uuid"

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
