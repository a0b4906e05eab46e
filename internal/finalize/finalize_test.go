package finalize_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
	"github.com/docuvault/docuvault/internal/tracing"
)

type fixture struct {
	db    *pgxpool.Pool
	admin *pgxpool.Pool
	blobs *blob.Store
	fin   *finalize.Finalizer
	user  uuid.UUID // owns the documents upload and stageAsAPI store
}

func setup(t *testing.T) *fixture {
	t.Helper()
	db := testenv.NewDB(t)
	blobs, err := blob.New(testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	pool := testenv.Pool(t, db.AppURL)
	admin := testenv.Pool(t, db.AdminDSN())
	return &fixture{db: pool, admin: admin, blobs: blobs, user: testenv.User(t, admin, ""),
		fin: finalize.New(testenv.Logger(t), pool, blobs, nil, store.QuotaLimits{Bytes: 1 << 40, Documents: 1 << 20})}
}

// apiOrigin is the origin the fixture's uploads are recorded with, as the
// API records a request's.
var apiOrigin = func() store.Origin {
	ip := netip.MustParseAddr("198.51.100.4")
	return store.Origin{ClientIP: &ip, UserAgent: "test/1", RequestID: "upload-req-1",
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
}()

// upload does what the API does: stage the bytes, then commit the pending
// row of the fixture's user with its event (from apiOrigin). claimed is
// the checksum the row records.
func (f *fixture) upload(t *testing.T, content, claimed []byte) (store.Document, events.Envelope) {
	t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	if _, err := f.blobs.Put(ctx, blob.StagingKey(id), bytes.NewReader(content), 1<<30, "application/pdf"); err != nil {
		t.Fatal(err)
	}
	var doc store.Document
	var ev events.Envelope
	err := store.WithTx(ctx, f.db, func(tx pgx.Tx) error {
		var err error
		doc, err = store.InsertDocument(ctx, tx, store.Document{
			ID: id, UserID: &f.user, Filename: "a.pdf", ContentType: "application/pdf",
			SizeBytes: int64(len(content)), SHA256: claimed, StorageKey: blob.StagingKey(id),
		})
		if err != nil {
			return err
		}
		ev, err = events.New(events.DocumentUploaded, "document", id, f.actor(), uuid.Must(uuid.NewV7()), nil, doc.EventData())
		if err != nil {
			return err
		}
		return store.Record(ctx, tx, ev, apiOrigin)
	})
	if err != nil {
		t.Fatal(err)
	}
	return doc, ev
}

// actor is the fixture's user as the actor of the events it records.
func (f *fixture) actor() events.Actor { return events.Actor{Type: "user", ID: &f.user} }

func randomContent(t *testing.T, n int) ([]byte, []byte) {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	sum := sha256.Sum256(b)
	return b, sum[:]
}

func (f *fixture) status(t *testing.T, id uuid.UUID) (string, *string) {
	t.Helper()
	doc, err := store.GetDocument(context.Background(), f.db, id)
	if err != nil {
		t.Fatal(err)
	}
	return doc.Status, doc.RejectReason
}

func (f *fixture) exists(t *testing.T, key string) bool {
	t.Helper()
	_, err := f.blobs.Stat(context.Background(), key)
	return err == nil
}

func (f *fixture) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := f.admin.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFinalizeMarksReadyUnderFinalKey(t *testing.T) {
	t.Parallel()
	f := setup(t)
	content, sum := randomContent(t, 100<<10)
	doc, ev := f.upload(t, content, sum)
	if err := f.fin.Finalize(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.status(t, doc.ID); st != store.StatusReady {
		t.Fatalf("status %s; want ready", st)
	}
	final := "users/" + f.user.String() + "/documents/" + doc.ID.String()
	if !f.exists(t, final) || f.exists(t, blob.StagingKey(doc.ID)) {
		t.Errorf("final exists=%v staging exists=%v", f.exists(t, final), f.exists(t, blob.StagingKey(doc.ID)))
	}
	if n := f.count(t, `select count(*) from outbox where event_type = 'document.finalized'
		and payload->>'causation_id' = $1 and payload->>'correlation_id' = $2`, ev.ID.String(), ev.CorrelationID.String()); n != 1 {
		t.Errorf("%d finalized events caused by the upload; want 1", n)
	}
}

// The same event delivered ten times at once has the effect of one.
func TestSameEventDeliveredConcurrently(t *testing.T) {
	t.Parallel()
	f := setup(t)
	content, sum := randomContent(t, 2<<20)
	doc, ev := f.upload(t, content, sum)

	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- f.fin.Finalize(context.Background(), ev)
		}()
	}
	wg.Wait()
	close(errs)
	// A loser may fail (its source vanished under it); redelivery then
	// finds the work done.
	for err := range errs {
		if err != nil {
			if err := f.fin.Finalize(context.Background(), ev); err != nil {
				t.Fatalf("redelivery after a concurrent failure: %v", err)
			}
		}
	}
	if st, _ := f.status(t, doc.ID); st != store.StatusReady {
		t.Fatalf("status %s; want ready", st)
	}
	for _, q := range []string{
		`select count(*) from outbox where event_type = 'document.finalized' and aggregate_id = $1`,
		`select count(*) from audit_log where action = 'document.finalized' and aggregate_id = $1`,
	} {
		if n := f.count(t, q, doc.ID); n != 1 {
			t.Errorf("%s: %d; want 1", q, n)
		}
	}
}

// A consumer killed after moving the object but before committing leaves
// the work half done; the redelivered event completes it.
func TestCrashBetweenObjectMoveAndCommit(t *testing.T) {
	t.Parallel()
	for _, removedStaging := range []bool{false, true} {
		f := setup(t)
		content, sum := randomContent(t, 50<<10)
		doc, ev := f.upload(t, content, sum)
		ctx := context.Background()
		final := blob.FinalKey(&f.user, doc.ID)
		if err := f.blobs.Copy(ctx, blob.StagingKey(doc.ID), final); err != nil {
			t.Fatal(err)
		}
		if removedStaging {
			if err := f.blobs.Remove(ctx, blob.StagingKey(doc.ID)); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.fin.Finalize(ctx, ev); err != nil {
			t.Fatalf("redelivery (staging removed: %v): %v", removedStaging, err)
		}
		if st, _ := f.status(t, doc.ID); st != store.StatusReady {
			t.Errorf("staging removed %v: status %s; want ready", removedStaging, st)
		}
		if !f.exists(t, final) || f.exists(t, blob.StagingKey(doc.ID)) {
			t.Errorf("staging removed %v: final %v staging %v", removedStaging, f.exists(t, final), f.exists(t, blob.StagingKey(doc.ID)))
		}
	}
}

func TestRejections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("checksum mismatch", func(t *testing.T) {
		f := setup(t)
		content, _ := randomContent(t, 10<<10)
		_, wrong := randomContent(t, 1)
		doc, ev := f.upload(t, content, wrong)
		if err := f.fin.Finalize(ctx, ev); err != nil {
			t.Fatal(err)
		}
		st, reason := f.status(t, doc.ID)
		if st != store.StatusRejected || reason == nil || *reason != store.ReasonChecksumMismatch {
			t.Errorf("status %s reason %v; want rejected checksum_mismatch", st, reason)
		}
		if f.exists(t, blob.StagingKey(doc.ID)) || f.exists(t, blob.FinalKey(&f.user, doc.ID)) {
			t.Error("a rejected upload's bytes remain")
		}
		if n := f.count(t, `select count(*) from outbox where event_type = 'document.rejected' and aggregate_id = $1`, doc.ID); n != 1 {
			t.Errorf("%d rejected events; want 1", n)
		}
	})

	t.Run("object missing", func(t *testing.T) {
		f := setup(t)
		content, sum := randomContent(t, 10<<10)
		doc, ev := f.upload(t, content, sum)
		if err := f.blobs.Remove(ctx, blob.StagingKey(doc.ID)); err != nil {
			t.Fatal(err)
		}
		if err := f.fin.Finalize(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if st, reason := f.status(t, doc.ID); st != store.StatusRejected || *reason != store.ReasonObjectMissing {
			t.Errorf("status %s reason %v; want rejected object_missing", st, reason)
		}
	})
}

// A document deleted while pending is never finalised, and its bytes go.
func TestDeletedWhilePending(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, sum := randomContent(t, 10<<10)
	doc, ev := f.upload(t, content, sum)
	if err := store.WithTx(ctx, f.db, func(tx pgx.Tx) error {
		_, err := store.MarkDeleted(ctx, tx, doc.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.fin.Finalize(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.status(t, doc.ID); st != store.StatusDeleted {
		t.Errorf("status %s; want deleted", st)
	}
	if f.exists(t, blob.StagingKey(doc.ID)) || f.exists(t, blob.FinalKey(&f.user, doc.ID)) {
		t.Error("a deleted document's bytes remain")
	}
	if n := f.count(t, `select count(*) from outbox where event_type = 'document.finalized'`); n != 0 {
		t.Errorf("%d finalized events for a deleted document", n)
	}
}

func TestSweepRemovesOrphansAndRequeuesStuckUploads(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()

	// An orphan: staged bytes whose transaction never committed.
	orphan := uuid.Must(uuid.NewV7())
	if _, err := f.blobs.Put(ctx, blob.StagingKey(orphan), bytes.NewReader([]byte("lost")), 100, ""); err != nil {
		t.Fatal(err)
	}
	// A pending upload whose event was published but never handled (the
	// stream entry was lost).
	content, sum := randomContent(t, 1<<10)
	doc, _ := f.upload(t, content, sum)
	const originColumns = `coalesce(host(client_ip), ''), coalesce(user_agent, ''), coalesce(request_id, ''), coalesce(traceparent, '')`
	var original string
	var originalOrigin [4]string
	if err := f.admin.QueryRow(ctx, `select payload::text, `+originColumns+` from outbox`).Scan(&original,
		&originalOrigin[0], &originalOrigin[1], &originalOrigin[2], &originalOrigin[3]); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.Exec(ctx, `delete from outbox`); err != nil { // as the relay does
		t.Fatal(err)
	}
	if _, err := f.admin.Exec(ctx, `update documents set created_at = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}

	cfg := finalize.SweepConfig{StagingGrace: time.Millisecond, RepublishAfter: time.Minute}
	deadline := time.Now().Add(10 * time.Second)
	var res finalize.SweepResult
	for f.exists(t, blob.StagingKey(orphan)) {
		if time.Now().After(deadline) {
			t.Fatal("orphan not removed within 10 s")
		}
		r, err := f.fin.SweepOnce(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		res.Republished += r.Republished
		time.Sleep(100 * time.Millisecond) // object times have one-second resolution
	}
	if !f.exists(t, blob.StagingKey(doc.ID)) {
		t.Error("the sweep removed the staged bytes of a pending document")
	}
	if res.Republished != 1 || f.count(t, `select count(*) from outbox`) != 1 {
		t.Fatalf("republished %d; want the stuck upload's event re-queued once", res.Republished)
	}
	// The event is rebuilt from its audit row: same id, same envelope, same
	// origin (request id and traceparent included).
	var rebuilt string
	var rebuiltOrigin [4]string
	if err := f.admin.QueryRow(ctx, `select payload::text, `+originColumns+` from outbox`).Scan(&rebuilt,
		&rebuiltOrigin[0], &rebuiltOrigin[1], &rebuiltOrigin[2], &rebuiltOrigin[3]); err != nil {
		t.Fatal(err)
	}
	if rebuiltOrigin != originalOrigin || originalOrigin[2] != apiOrigin.RequestID {
		t.Errorf("re-queued event's origin %q; want the original's %q", rebuiltOrigin, originalOrigin)
	}
	var a, b map[string]any
	if err := json.Unmarshal([]byte(original), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(rebuilt), &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("re-queued event differs from the original:\n%s\n%s", original, rebuilt)
	}
	// Published again and still pending: not re-queued before RepublishAfter.
	if _, err := f.admin.Exec(ctx, `delete from outbox`); err != nil {
		t.Fatal(err)
	}
	if r, err := f.fin.SweepOnce(ctx, cfg); err != nil || r.Republished != 0 {
		t.Errorf("second sweep re-queued %d (%v); want none within RepublishAfter", r.Republished, err)
	}
}

// A deletion whose event was lost (dead-lettered, Redis restarted empty)
// still has its bytes removed by the sweep.
func TestSweepPurgesDeletionsWhoseEventWasLost(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, sum := randomContent(t, 1<<10)
	doc, ev := f.upload(t, content, sum)
	if err := f.fin.Finalize(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if err := store.WithTx(ctx, f.db, func(tx pgx.Tx) error {
		_, err := store.MarkDeleted(ctx, tx, doc.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.Exec(ctx, `update documents set deleted_at = now() - interval '1 hour' where id = $1`, doc.ID); err != nil {
		t.Fatal(err)
	}
	res, err := f.fin.SweepOnce(ctx, finalize.SweepConfig{RepublishAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.Purged != 1 || f.exists(t, blob.FinalKey(&f.user, doc.ID)) {
		t.Errorf("purged %d, object still there: %v", res.Purged, f.exists(t, blob.FinalKey(&f.user, doc.ID)))
	}
	if res, _ := f.fin.SweepOnce(ctx, finalize.SweepConfig{RepublishAfter: time.Minute}); res.Purged != 0 {
		t.Errorf("a second sweep purged %d again", res.Purged)
	}
}

// The event a delivery writes keeps the delivered message's request id and
// continues its trace: same trace id, a span of its own. Both paths of
// finish are covered: one statement (no owner) and the quota charge.
func TestFinalizeKeepsTheRequestIDAndContinuesTheTrace(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, sum := randomContent(t, 4<<10)
	unowned, unownedEv := f.upload(t, content, sum)
	owned, ownedEv := f.uploadAs(t, f.newUser(t), content)
	for _, c := range []struct {
		doc store.Document
		ev  events.Envelope
	}{{unowned, unownedEv}, {owned, ownedEv}} {
		payload, err := json.Marshal(c.ev)
		if err != nil {
			t.Fatal(err)
		}
		msg := message.NewMessage(c.ev.ID.String(), payload)
		msg.Metadata.Set(events.MetaRequestID, apiOrigin.RequestID)
		msg.Metadata.Set(events.MetaTraceparent, apiOrigin.Traceparent)
		if err := f.fin.Handle(msg); err != nil {
			t.Fatal(err)
		}
		var requestID, traceparent *string
		for _, table := range []string{"audit_log", "outbox"} {
			if err := f.admin.QueryRow(ctx, `select request_id, traceparent from `+table+` where aggregate_id = $1 and event_id <> $2`,
				c.doc.ID, c.ev.ID).Scan(&requestID, &traceparent); err != nil {
				t.Fatalf("%s: %v", table, err)
			}
			if requestID == nil || *requestID != apiOrigin.RequestID || traceparent == nil ||
				tracing.TraceIDOf(*traceparent) != tracing.TraceIDOf(apiOrigin.Traceparent) || *traceparent == apiOrigin.Traceparent {
				t.Errorf("%s row of the finalized event: request_id %v, traceparent %v; want %s and a new span in trace %s",
					table, requestID, traceparent, apiOrigin.RequestID, tracing.TraceIDOf(apiOrigin.Traceparent))
			}
		}
	}
}
