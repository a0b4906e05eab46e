package cloudsync_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/webdav"

	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

// validOutbox fails the test for any event the syncer wrote to the
// outbox (cloud_sync and cloud_connection events; the fixture's
// document events are not the pipeline's) that does not match its JSON
// Schema.
func (f *fixture) validOutbox(t *testing.T) {
	t.Helper()
	rows, err := f.admin.Query(context.Background(), `select payload::text from outbox where event_type like 'cloud\_%' order by id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		if err := events.Validate([]byte(p)); err != nil {
			t.Errorf("%v\n%s", err, p)
		}
	}
}

// A connection that goes from active to failing, and back, says so on
// its stream: cloud_connection.failing with the (redacted) error, then
// cloud_connection.recovered, each caused by the cloud_sync event of
// the same transaction. Failures while failing, and successes while
// active, change no status and write no such event.
func TestConnectionStatusChangesAreEvents(t *testing.T) {
	t.Parallel()
	f := setup(t)
	conn := f.webdavConn(t, true)
	s := f.syncer(cloudsync.Config{Retry: cloudsync.RetryPolicy{MaxAttempts: 2, BaseDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond}})
	ctx := context.Background()
	syncTo := func(status string) store.Document {
		t.Helper()
		doc, ev := f.readyDocument(t, randomContent(1000))
		if err := s.HandleEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the sync to be "+status, func() bool {
			s.Drain(ctx)
			return f.row(t, doc.ID, conn.ID).Status == status
		})
		return doc
	}
	connection := func() store.CloudConnection {
		t.Helper()
		c, err := store.CloudConnectionByID(ctx, f.db, conn.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// causedBy checks that ev is about the connection and caused by the
	// only event of type typ about document doc.
	causedBy := func(ev events.Envelope, typ string, doc uuid.UUID) {
		t.Helper()
		var cause *events.Envelope
		for _, c := range f.outboxEvents(t, typ) {
			if c.AggregateID == doc {
				cause = &c
			}
		}
		switch {
		case cause == nil:
			t.Errorf("no %s of %s", typ, doc)
		case ev.AggregateType != "cloud_connection" || ev.AggregateID != conn.ID || ev.Actor != events.System:
			t.Errorf("%s about %s %s by %+v; want about the connection, by system", ev.Type, ev.AggregateType, ev.AggregateID, ev.Actor)
		case ev.CausationID == nil || *ev.CausationID != cause.ID || ev.CorrelationID != cause.CorrelationID:
			t.Errorf("%s caused by %v (correlation %s); want the %s %s (correlation %s)", ev.Type, ev.CausationID, ev.CorrelationID,
				typ, cause.ID, cause.CorrelationID)
		}
	}

	syncTo(store.SyncSynced) // active, and stays so: no status event
	f.dav.SetUnavailable(true)
	first := syncTo(store.SyncFailed)
	syncTo(store.SyncFailed) // already failing: no second event
	if c := connection(); c.Status != store.ConnectionFailing {
		t.Fatalf("connection %s; want failing", c.Status)
	}
	failing := f.outboxEvents(t, events.CloudConnectionFailing)
	if len(failing) != 1 {
		t.Fatalf("%d cloud_connection.failing; want 1", len(failing))
	}
	causedBy(failing[0], events.CloudSyncFailed, first.ID)
	var data events.CloudConnectionFailure
	if err := json.Unmarshal(failing[0].Data, &data); err != nil {
		t.Fatal(err)
	}
	if data.ID != conn.ID || data.Status != store.ConnectionFailing || !strings.Contains(data.LastError, "503") {
		t.Errorf("cloud_connection.failing data %+v; want the failing connection and its error", data)
	}

	f.dav.SetUnavailable(false)
	back := syncTo(store.SyncSynced)
	syncTo(store.SyncSynced)
	if c := connection(); c.Status != store.ConnectionActive || c.LastError != nil {
		t.Fatalf("connection %s (%v); want active without error", c.Status, c.LastError)
	}
	recovered := f.outboxEvents(t, events.CloudConnectionRecovered)
	if len(recovered) != 1 {
		t.Fatalf("%d cloud_connection.recovered; want 1", len(recovered))
	}
	causedBy(recovered[0], events.CloudSyncCompleted, back.ID)
	var conData events.CloudConnection
	if err := json.Unmarshal(recovered[0].Data, &conData); err != nil {
		t.Fatal(err)
	}
	if conData.ID != conn.ID || conData.Status != store.ConnectionActive {
		t.Errorf("cloud_connection.recovered data %+v", conData)
	}
	f.validOutbox(t)
	f.assertNoCanary(t)
}

// A removal the sync worker plans itself, because the document was
// deleted before (or while) its copy was made and before the deletion's
// handler ran, is caused by the document.deleted, not by the
// document.finalized that planned the copy: the cloud_sync.removed names
// the deletion and keeps its correlation id.
func TestWorkerPlannedRemovalIsCausedByTheDeletion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	checkRemoved := func(t *testing.T, f *fixture, doc uuid.UUID, del, fin events.Envelope) {
		t.Helper()
		var removed []events.Envelope
		for _, ev := range f.outboxEvents(t, events.CloudSyncRemoved) {
			if ev.AggregateID == doc {
				removed = append(removed, ev)
			}
		}
		if len(removed) != 1 {
			t.Fatalf("%d cloud_sync.removed of %s; want 1", len(removed), doc)
		}
		if c := removed[0].CausationID; c == nil || *c != del.ID || removed[0].CorrelationID != del.CorrelationID {
			t.Errorf("cloud_sync.removed caused by %v, correlation %s; want the deletion %s, correlation %s (not the finalized %s)",
				c, removed[0].CorrelationID, del.ID, del.CorrelationID, fin.ID)
		}
		f.validOutbox(t)
	}

	// Deleted before the copy was attempted: the worker finds the
	// document no longer ready.
	t.Run("before the copy", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		conn := f.webdavConn(t, true)
		s := f.syncer(cloudsync.Config{})
		doc, fin := f.readyDocument(t, randomContent(1000))
		if err := s.HandleEvent(ctx, fin); err != nil {
			t.Fatal(err)
		}
		del := f.deleteDocument(t, doc.ID) // its handler has not run
		s.Drain(ctx)
		if r := f.row(t, doc.ID, conn.ID); r.Operation != store.SyncRemove || r.Status != store.SyncRemoved ||
			r.CauseEventID == nil || *r.CauseEventID != del.ID {
			t.Errorf("row %s/%s caused by %v; want remove/removed caused by %s", r.Operation, r.Status, r.CauseEventID, del.ID)
		}
		checkRemoved(t, f, doc.ID, del, fin)
		// The deletion's handler, late, changes nothing.
		if err := s.HandleEvent(ctx, del); err != nil {
			t.Fatal(err)
		}
		s.Drain(ctx)
		checkRemoved(t, f, doc.ID, del, fin)
	})

	// Deleted while the copy was uploading: the worker finds the
	// document deleted when it records the copy.
	t.Run("during the copy", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		// The first PUT deletes the document before it is served.
		var mu sync.Mutex
		var doc uuid.UUID
		var del events.Envelope
		dav := &webdav.Handler{Prefix: "/dav", FileSystem: webdav.NewMemFS(), LockSystem: webdav.NewMemLS()}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				mu.Lock()
				if del.ID == uuid.Nil {
					del = f.deleteDocument(t, doc)
				}
				mu.Unlock()
			}
			dav.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		f.connect(t, "webdav", map[string]any{"url": srv.URL + "/dav/", "prefix": ""},
			map[string]any{"username": "bob", "password": "any"}, true)
		s := f.syncer(cloudsync.Config{})
		d, fin := f.readyDocument(t, randomContent(1000))
		mu.Lock()
		doc = d.ID
		mu.Unlock()
		if err := s.HandleEvent(ctx, fin); err != nil {
			t.Fatal(err)
		}
		s.Drain(ctx)
		mu.Lock()
		defer mu.Unlock()
		if del.ID == uuid.Nil {
			t.Fatal("the copy made no PUT")
		}
		if n := len(f.outboxEvents(t, events.CloudSyncCompleted)); n != 0 {
			t.Errorf("%d cloud_sync.completed for a document deleted during its copy", n)
		}
		checkRemoved(t, f, doc, del, fin)
	})
}
