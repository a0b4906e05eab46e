package finalize_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/store"
)

// adopted stores a ready document of a new user as phase 1 left it and
// `api migrate --unowned-owner` gave it: owned, its object still under
// users/_unowned/. It returns the document and its document.updated.
func (f *fixture) adopted(t *testing.T, content []byte) (store.Document, events.Envelope) {
	t.Helper()
	ctx := context.Background()
	id, user := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	old := blob.FinalKey(nil, id)
	if _, err := f.blobs.Put(ctx, old, bytes.NewReader(content), 1<<30, "application/pdf"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	if _, err := f.admin.Exec(ctx, `insert into users (id, email) values ($1, $2)`, user, user.String()+"@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.Exec(ctx, `insert into documents (id, user_id, filename, content_type, size_bytes, sha256, status, storage_key, finalized_at)
		values ($1, $2, 'a.pdf', 'application/pdf', $3, $4, 'ready', $5, now())`, id, user, len(content), sum[:], old); err != nil {
		t.Fatal(err)
	}
	doc, err := store.GetDocument(ctx, f.db, id)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.New(events.DocumentUpdated, "document", id, events.System, uuid.Must(uuid.NewV7()), nil, doc.EventData())
	if err != nil {
		t.Fatal(err)
	}
	return doc, ev
}

// A phase 1 document given an owner moves under the owner's prefix when
// its document.updated is handled: copied, the row pointed at the new key
// with its audit row and event, the old object removed. Handling it again
// (a duplicate delivery) changes nothing.
func TestRelocateMovesAdoptedDocumentsUnderTheirOwner(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, _ := randomContent(t, 3000)
	doc, ev := f.adopted(t, content)
	old, want := doc.StorageKey, blob.FinalKey(doc.UserID, doc.ID)

	payload, _ := json.Marshal(ev)
	for range 2 {
		if err := f.fin.Handle(message.NewMessage(ev.ID.String(), payload)); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := store.GetDocument(ctx, f.db, doc.ID)
	if err != nil || cur.StorageKey != want || cur.Status != store.StatusReady {
		t.Fatalf("after relocation: %+v, %v; want ready at %s", cur, err, want)
	}
	if got := f.read(t, want); !bytes.Equal(got, content) {
		t.Fatal("the moved object differs")
	}
	if f.exists(t, old) {
		t.Error("the old object is still there")
	}
	if n := f.count(t, `select count(*) from outbox where event_type = 'document.updated' and aggregate_id = $1
		and payload::jsonb->>'causation_id' = $2 and payload::jsonb->'data'->>'storage_key' = $3`, doc.ID, ev.ID.String(), want); n != 1 {
		t.Errorf("%d document.updated events caused by the move; want 1", n)
	}
	if n := f.count(t, `select count(*) from audit_log where aggregate_id = $1 and action = 'document.updated'`, doc.ID); n != 1 {
		t.Errorf("%d audit rows; want 1", n)
	}
}

// The sweep moves documents whose document.updated was lost, and removes
// an old object a move left behind (committed, then crashed before the
// removal) once it is older than the grace period; objects rows still
// point at stay.
func TestSweepRelocatesAndRemovesLeftovers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, _ := randomContent(t, 1000)
	lost, _ := f.adopted(t, content)
	// A move that committed but did not remove the old object.
	left, _ := f.adopted(t, content)
	moved := blob.FinalKey(left.UserID, left.ID)
	if err := f.blobs.Copy(ctx, left.StorageKey, moved); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.Exec(ctx, `update documents set storage_key = $2 where id = $1`, left.ID, moved); err != nil {
		t.Fatal(err)
	}

	cfg := finalize.SweepConfig{StagingGrace: time.Nanosecond}
	time.Sleep(10 * time.Millisecond)
	res, err := f.fin.SweepOnce(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Relocated != 1 || res.OrphansRemoved != 1 {
		t.Errorf("sweep: %+v; want 1 relocated, 1 leftover removed", res)
	}
	cur, err := store.GetDocument(ctx, f.db, lost.ID)
	if err != nil || cur.StorageKey != blob.FinalKey(lost.UserID, lost.ID) || !f.exists(t, cur.StorageKey) {
		t.Errorf("lost event's document: %+v, %v", cur.StorageKey, err)
	}
	for _, k := range []string{lost.StorageKey, left.StorageKey} {
		if f.exists(t, k) {
			t.Errorf("%s still there", k)
		}
	}
	if !f.exists(t, moved) {
		t.Error("the moved object went")
	}
	if res, err := f.fin.SweepOnce(ctx, cfg); err != nil || res.Relocated != 0 || res.OrphansRemoved != 0 {
		t.Errorf("second sweep: %+v, %v; want nothing to do", res, err)
	}
}

// A document deleted before its object moved is purged at both keys.
func TestPurgeOfAnAdoptedDocumentRemovesItsOldObject(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, _ := randomContent(t, 500)
	doc, _ := f.adopted(t, content)
	if _, err := f.admin.Exec(ctx, `update documents set status = 'deleted', deleted_at = now() where id = $1`, doc.ID); err != nil {
		t.Fatal(err)
	}
	cur, err := store.GetDocument(ctx, f.db, doc.ID)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.New(events.DocumentDeleted, "document", doc.ID, events.System, uuid.Must(uuid.NewV7()), nil, cur.EventData())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.fin.Purge(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if f.exists(t, doc.StorageKey) {
		t.Error("the old object outlived the purge")
	}
}

// A finalisation that a phase 1 consumer began (object moved under
// users/_unowned/, then a crash before its commit) and that is retried
// after the document was given an owner finds the object there and
// finishes under the owner's prefix, instead of rejecting the document
// as object_missing while the bytes sit at the old key.
func TestRetriedPhase1FinalisationFindsItsObject(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, sum := randomContent(t, 2000)
	doc, ev := f.upload(t, content, sum)
	old := blob.FinalKey(nil, doc.ID)
	f.move(t, blob.StagingKey(doc.ID), old)
	if err := f.fin.Finalize(ctx, ev); err != nil {
		t.Fatal(err)
	}
	cur, err := store.GetDocument(ctx, f.db, doc.ID)
	if err != nil || cur.Status != store.StatusReady || cur.StorageKey != blob.FinalKey(&f.user, doc.ID) {
		t.Fatalf("after the retry: %s %s (%v)", cur.Status, cur.StorageKey, err)
	}
	if got := f.read(t, cur.StorageKey); !bytes.Equal(got, content) {
		t.Error("the finalised object differs")
	}
	if f.exists(t, old) {
		t.Error("the object is still under users/_unowned/ too")
	}
}

// A document whose object is lost does not hold up the others' moves.
func TestSweepMovesPastALostObject(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, _ := randomContent(t, 700)
	lost, _ := f.adopted(t, content)
	if err := f.blobs.Remove(ctx, lost.StorageKey); err != nil {
		t.Fatal(err)
	}
	fine, _ := f.adopted(t, content)
	res, err := f.fin.SweepOnce(ctx, finalize.SweepConfig{})
	if err != nil || res.Relocated != 1 {
		t.Fatalf("sweep: %+v, %v; want the other document moved", res, err)
	}
	if cur, _ := store.GetDocument(ctx, f.db, fine.ID); cur.StorageKey != blob.FinalKey(fine.UserID, fine.ID) {
		t.Errorf("the other document is still at %s", cur.StorageKey)
	}
}
