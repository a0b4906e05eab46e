package finalize_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/store"
)

// grouped starts the fixture's group finaliser (as the consumer runs it)
// and its staged-object remover until the test ends, and returns the
// registry its metrics are on.
func (f *fixture) grouped(t *testing.T, parallel, most int) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	f.fin.Instrument(reg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.fin.RunBatches(ctx, parallel, most) }()
	go func() { defer wg.Done(); f.fin.RunRemover(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	time.Sleep(20 * time.Millisecond) // let both start
	return reg
}

// finalizeConcurrently hands each of evs to Finalize times times, all at
// once, and fails the test on any error.
func (f *fixture) finalizeConcurrently(t *testing.T, evs []events.Envelope, times int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, ev := range evs {
		for range times {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f.fin.Finalize(context.Background(), ev); err != nil {
					t.Errorf("finalize %s: %v", ev.AggregateID, err)
				}
			}()
		}
	}
	wg.Wait()
}

// waitStagedRemoved waits up to 10 s until the staged objects of docs are
// removed (in batches, by the remover).
func (f *fixture) waitStagedRemoved(t *testing.T, docs []store.Document) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, d := range docs {
		for f.exists(t, blob.StagingKey(d.ID)) {
			if time.Now().After(deadline) {
				t.Fatalf("staged object of %s not removed within 10 s", d.ID)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// groups is how many groups the finaliser formed and how many uploads
// they were handed in all.
func groups(t *testing.T, reg *prometheus.Registry) (count, uploads uint64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "docuvault_finalize_group_documents" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), uint64(h.GetSampleSum())
		}
	}
	return 0, 0
}

// Uploads handed to Finalize at once are finalised in groups, each
// delivered three times concurrently: every document ends ready once with
// its bytes at the final key, one finalized event and one audit row each,
// the owner's usage equal to the ready sizes, and the staged objects
// removed.
func TestGroupsFinaliseConcurrentUploadsOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	reg := f.grouped(t, 2, 16)
	const uploads = 48
	docs := make([]store.Document, uploads)
	evs := make([]events.Envelope, uploads)
	contents := make([][]byte, uploads)
	for i := range uploads {
		contents[i], _ = randomContent(t, 4<<10+i)
		docs[i], evs[i] = f.stageAsAPI(t, contents[i])
	}
	f.finalizeConcurrently(t, evs, 3)

	var total int64
	for i, d := range docs {
		if status, reason := f.status(t, d.ID); status != store.StatusReady {
			t.Fatalf("document %s: %s (%v); want ready", d.ID, status, reason)
		}
		if got := f.read(t, blob.FinalKey(&f.user, d.ID)); !bytes.Equal(got, contents[i]) {
			t.Errorf("final object of %s differs from the upload", d.ID)
		}
		total += d.SizeBytes
	}
	for _, q := range []string{
		`select count(*) from outbox where event_type = 'document.finalized'`,
		`select count(*) from audit_log where action = 'document.finalized'`,
		`select count(*) from processed_events where consumer = 'finalize'`,
	} {
		if n := f.count(t, q); n != uploads {
			t.Errorf("%s: %d; want %d", q, n, uploads)
		}
	}
	usedBytes, usedDocs, readyBytes, readyDocs := f.usage(t, f.user)
	if usedBytes != total || readyBytes != total || usedDocs != uploads || readyDocs != uploads {
		t.Errorf("usage %d bytes / %d documents, ready %d / %d; want %d / %d", usedBytes, usedDocs, readyBytes, readyDocs, total, uploads)
	}
	count, handed := groups(t, reg)
	if count == 0 || handed <= count {
		t.Errorf("%d groups for %d uploads handed over: no upload was finalised in a group with another", count, handed)
	}
	f.waitStagedRemoved(t, docs)
	t.Logf("%d groups for %d uploads handed over", count, handed)
}

// What a group does not finish the common way is finalised one by one,
// as without groups: a replaced staged object is rejected with no object
// left (and no copy of it), a staged object already moved by an attempt
// that crashed is found at its final key, a document deleted while
// pending is purged, an unknown document is skipped.
func TestGroupsHandBackTheUncommonCases(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.grouped(t, 1, 8)
	ctx := context.Background()

	content, _ := randomContent(t, 8<<10)
	replaced, replacedEv := f.stageAsAPI(t, content)
	other, _ := randomContent(t, 8<<10)
	if _, err := f.blobs.Put(ctx, blob.StagingKey(replaced.ID), bytes.NewReader(other), 1<<30, "application/pdf"); err != nil {
		t.Fatal(err)
	}

	content, _ = randomContent(t, 8<<10)
	moved, movedEv := f.stageAsAPI(t, content)
	f.move(t, blob.StagingKey(moved.ID), blob.FinalKey(&f.user, moved.ID))

	content, _ = randomContent(t, 8<<10)
	deleted, deletedEv := f.stageAsAPI(t, content)
	if _, err := f.admin.Exec(ctx, `update documents set status = 'deleted', deleted_at = now() where id = $1`, deleted.ID); err != nil {
		t.Fatal(err)
	}

	content, _ = randomContent(t, 8<<10)
	plain, plainEv := f.stageAsAPI(t, content)
	unknown := plainEv
	unknown.ID, unknown.AggregateID = uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())

	var wg sync.WaitGroup
	for _, ev := range []events.Envelope{replacedEv, movedEv, deletedEv, plainEv, unknown} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.fin.Finalize(ctx, ev); err != nil {
				t.Errorf("finalize %s: %v", ev.AggregateID, err)
			}
		}()
	}
	wg.Wait()

	if status, reason := f.status(t, replaced.ID); status != store.StatusRejected || reason == nil || *reason != store.ReasonChecksumMismatch {
		t.Errorf("replaced object: %s %v; want rejected checksum_mismatch", status, reason)
	}
	if f.exists(t, blob.FinalKey(&f.user, replaced.ID)) || f.exists(t, blob.StagingKey(replaced.ID)) {
		t.Error("an object of the rejected document is left")
	}
	if status, _ := f.status(t, moved.ID); status != store.StatusReady || !f.exists(t, blob.FinalKey(&f.user, moved.ID)) {
		t.Errorf("already moved: %s, object %v; want ready with its object", status, f.exists(t, blob.FinalKey(&f.user, moved.ID)))
	}
	if f.exists(t, blob.StagingKey(deleted.ID)) || f.exists(t, blob.FinalKey(&f.user, deleted.ID)) {
		t.Error("an object of the document deleted while pending is left")
	}
	if status, _ := f.status(t, plain.ID); status != store.StatusReady {
		t.Errorf("plain upload: %s; want ready", status)
	}
	if n := f.count(t, `select count(*) from outbox where event_type = 'document.finalized'`); n != 2 {
		t.Errorf("%d finalized events; want 2", n)
	}
}

// A group stopped with uploads still queued hands them back: Finalize
// never waits on a finaliser that is gone.
func TestFinalizeAfterTheGroupsStopped(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.fin.RunBatches(ctx, 1, 4) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	<-done
	content, _ := randomContent(t, 4<<10)
	doc, ev := f.stageAsAPI(t, content)
	finished := make(chan error, 1)
	go func() { finished <- f.fin.Finalize(context.Background(), ev) }()
	select {
	case err := <-finished:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Finalize still waits 30 s after the group finaliser stopped")
	}
	if status, _ := f.status(t, doc.ID); status != store.StatusReady {
		t.Errorf("status %s; want ready", status)
	}
}

// Handle decodes only the types it acts on, by the type the relay puts in
// every message's metadata: another type is skipped unread, while an
// upload whose payload is broken is malformed (a dead letter).
func TestHandleSkipsOtherTypesUnread(t *testing.T) {
	t.Parallel()
	f := setup(t)
	skipped := message.NewMessage(uuid.NewString(), []byte("{not json"))
	skipped.Metadata.Set(events.MetaType, events.DocumentFinalized)
	if err := f.fin.Handle(skipped); err != nil {
		t.Errorf("a document.finalized message: %v; want it skipped", err)
	}
	broken := message.NewMessage(uuid.NewString(), []byte("{not json"))
	broken.Metadata.Set(events.MetaType, events.DocumentUploaded)
	if err := f.fin.Handle(broken); !errors.Is(err, finalize.ErrMalformed) {
		t.Errorf("a broken document.uploaded message: %v; want ErrMalformed", err)
	}
}
