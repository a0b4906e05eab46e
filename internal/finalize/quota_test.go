package finalize_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// newUser inserts a user and returns its id.
func (f *fixture) newUser(t *testing.T) uuid.UUID {
	t.Helper()
	return testenv.User(t, f.admin, "")
}

// uploadAs stages content and commits a pending document owned by owner.
func (f *fixture) uploadAs(t *testing.T, owner uuid.UUID, content []byte) (store.Document, events.Envelope) {
	t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	put, err := f.blobs.Put(ctx, blob.StagingKey(id), bytes.NewReader(content), 1<<30, "application/pdf")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	doc := store.Document{
		ID: id, UserID: &owner, Filename: "a.pdf", ContentType: "application/pdf", Status: store.StatusPending,
		SizeBytes: int64(len(content)), SHA256: sum[:], StorageKey: blob.StagingKey(id), StagingETag: &put.ETag,
	}
	ev, err := events.New(events.DocumentUploaded, "document", id, events.Actor{Type: "user", ID: &owner}, uuid.Must(uuid.NewV7()), nil, doc.EventData())
	if err != nil {
		t.Fatal(err)
	}
	doc, err = store.InsertUpload(ctx, f.db, doc, ev, store.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	return doc, ev
}

// usage is the owner's charged usage and the truth it must equal: the
// count and total size of its ready documents.
func (f *fixture) usage(t *testing.T, owner uuid.UUID) (usedBytes, usedDocs, readyBytes, readyDocs int64) {
	t.Helper()
	ctx := context.Background()
	_ = f.admin.QueryRow(ctx, `select used_bytes, used_documents from quotas where user_id = $1`, owner).Scan(&usedBytes, &usedDocs)
	if err := f.admin.QueryRow(ctx, `select coalesce(sum(size_bytes), 0), count(*) from documents where user_id = $1 and status = 'ready'`,
		owner).Scan(&readyBytes, &readyDocs); err != nil {
		t.Fatal(err)
	}
	return
}

// 32 uploads race for the last bytes of a quota that holds 10 of them, each
// finalised by two concurrent deliveries: exactly 10 end ready, the rest
// rejected as quota_exceeded with no object left, and usage equals the sum
// of the ready documents. Delivering everything again changes nothing.
func TestQuotaRaceForTheLastBytes(t *testing.T) {
	t.Parallel()
	quotaRace(t, setup(t))
}

// The same race with the group finaliser (RunBatches) running, as in the
// consumer: the uploads race in groups and one by one at once.
func TestQuotaRaceForTheLastBytesInGroups(t *testing.T) {
	t.Parallel()
	f := setup(t)
	reg := f.grouped(t, 2, 16)
	quotaRace(t, f)
	if count, handed := groups(t, reg); count == 0 || handed <= count {
		t.Errorf("%d groups for %d uploads handed over: the race ran one by one only", count, handed)
	}
}

func quotaRace(t *testing.T, f *fixture) {
	ctx := context.Background()
	owner := f.newUser(t)
	const size, fits, uploads = 10 << 10, 10, 32
	if err := store.SetQuotaLimits(ctx, f.db, owner, ptr(int64(size*fits)), nil); err != nil {
		t.Fatal(err)
	}
	docs := make([]store.Document, uploads)
	evs := make([]events.Envelope, uploads)
	for i := range uploads {
		content, _ := randomContent(t, size)
		docs[i], evs[i] = f.uploadAs(t, owner, content)
	}
	finalizeAll := func() { f.finalizeConcurrently(t, evs, 2) }
	finalizeAll()

	check := func() {
		t.Helper()
		ready, over := 0, 0
		for _, d := range docs {
			status, reason := f.status(t, d.ID)
			switch {
			case status == store.StatusReady:
				ready++
				if !f.exists(t, blob.FinalKey(&owner, d.ID)) {
					t.Errorf("ready document %s has no object", d.ID)
				}
			case status == store.StatusRejected && reason != nil && *reason == store.ReasonQuotaExceeded:
				over++
				if f.exists(t, blob.FinalKey(&owner, d.ID)) || f.exists(t, blob.StagingKey(d.ID)) {
					t.Errorf("document %s rejected for quota still has an object", d.ID)
				}
			default:
				t.Errorf("document %s ended %s (%v)", d.ID, status, reason)
			}
		}
		usedBytes, usedDocs, readyBytes, readyDocs := f.usage(t, owner)
		if ready != fits || over != uploads-fits {
			t.Errorf("%d ready, %d over quota; want %d and %d", ready, over, fits, uploads-fits)
		}
		if usedBytes != readyBytes || usedDocs != readyDocs || usedBytes > size*fits {
			t.Errorf("usage %d bytes / %d documents; ready documents %d bytes / %d; limit %d", usedBytes, usedDocs, readyBytes, readyDocs, size*fits)
		}
		if n := f.count(t, `select count(*) from outbox where event_type = 'document.finalized'`); n != fits {
			t.Errorf("%d finalized events; want %d", n, fits)
		}
	}
	check()
	finalizeAll() // duplicate deliveries
	check()
}

// Deleting a ready document frees its bytes exactly once; deleting a
// rejected or pending one frees nothing.
func TestDeleteFreesQuotaOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner := f.newUser(t)
	content, _ := randomContent(t, 4<<10)
	doc, ev := f.uploadAs(t, owner, content)
	pending, _ := f.uploadAs(t, owner, content)
	if err := f.fin.Finalize(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if used, _, ready, _ := f.usage(t, owner); used != 4<<10 || ready != used {
		t.Fatalf("usage %d after one ready document of %d bytes", used, 4<<10)
	}
	del := func(id uuid.UUID) error {
		return store.WithTx(ctx, f.db, func(tx pgx.Tx) error {
			_, err := store.MarkDeleted(ctx, tx, id)
			return err
		})
	}
	for _, id := range []uuid.UUID{doc.ID, pending.ID} {
		if err := del(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := del(doc.ID); err == nil {
		t.Error("deleting a deleted document succeeded")
	}
	usedBytes, usedDocs, _, _ := f.usage(t, owner)
	if usedBytes != 0 || usedDocs != 0 {
		t.Errorf("usage %d bytes / %d documents after deleting everything; want 0 / 0", usedBytes, usedDocs)
	}
}

// Every upload has an owner and is charged (phase 1's unowned uploads were
// not): an owner without a quotas row gets the finalizer's default
// limits, and the upload past them is rejected as quota_exceeded.
func TestDefaultLimitsChargeEveryUpload(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	fin := finalize.New(testenv.Logger(t), f.db, f.blobs, nil, store.QuotaLimits{Bytes: 1 << 40, Documents: 1})
	if n := f.count(t, `select count(*) from quotas where user_id = $1`, f.user); n != 0 {
		t.Fatalf("the fixture's user has %d quota rows before any upload; want none (default limits)", n)
	}
	content, sum := randomContent(t, 2<<10)
	first, ev := f.upload(t, content, sum)
	if err := fin.Finalize(ctx, ev); err != nil {
		t.Fatal(err)
	}
	content, sum = randomContent(t, 2<<10)
	second, ev := f.upload(t, content, sum)
	if err := fin.Finalize(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if status, _ := f.status(t, first.ID); status != store.StatusReady {
		t.Errorf("first upload %s; want ready", status)
	}
	if status, reason := f.status(t, second.ID); status != store.StatusRejected || reason == nil || *reason != store.ReasonQuotaExceeded {
		t.Errorf("second upload %s (%v); want rejected as quota_exceeded (default limit: 1 document)", status, reason)
	}
	usedBytes, usedDocs, readyBytes, readyDocs := f.usage(t, f.user)
	if usedBytes != 2<<10 || usedDocs != 1 || usedBytes != readyBytes || usedDocs != readyDocs {
		t.Errorf("usage %d bytes / %d documents; want %d / 1, as the ready documents (%d / %d)", usedBytes, usedDocs, 2<<10, readyBytes, readyDocs)
	}
}

func ptr[T any](v T) *T { return &v }
