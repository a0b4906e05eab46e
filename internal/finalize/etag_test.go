package finalize_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

// stageAsAPI stages content and commits its pending document with the
// staged object's ETag, as the API does.
func (f *fixture) stageAsAPI(t *testing.T, content []byte) (store.Document, events.Envelope) {
	t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	put, err := f.blobs.Put(ctx, blob.StagingKey(id), bytes.NewReader(content), 1<<30, "application/pdf")
	if err != nil {
		t.Fatal(err)
	}
	if put.ETag == "" {
		t.Fatal("Put returned no ETag")
	}
	sum := sha256.Sum256(content)
	doc := store.Document{ID: id, UserID: &f.user, Filename: "e.pdf", ContentType: "application/pdf", Status: store.StatusPending,
		SizeBytes: int64(len(content)), SHA256: sum[:], StorageKey: blob.StagingKey(id), StagingETag: &put.ETag}
	ev, err := events.New(events.DocumentUploaded, "document", id, f.actor(), uuid.Must(uuid.NewV7()), nil, doc.EventData())
	if err != nil {
		t.Fatal(err)
	}
	doc, err = store.InsertUpload(ctx, f.db, doc, ev, store.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	return doc, ev
}

// move moves an object as an attempt that crashed before its commit
// left it: copied to to, and from removed.
func (f *fixture) move(t *testing.T, from, to string) {
	t.Helper()
	ctx := context.Background()
	if err := f.blobs.Copy(ctx, from, to); err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.Remove(ctx, from); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) read(t *testing.T, key string) []byte {
	t.Helper()
	obj, _, err := f.blobs.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// With the upload's ETag, finalisation is one conditional copy: the final
// object holds the uploaded bytes, and the staged one is removed (in
// batches while the remover runs).
func TestFinalizeCopiesTheUnchangedObject(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	removerDone := make(chan struct{})
	go func() { defer close(removerDone); f.fin.RunRemover(ctx) }()
	time.Sleep(10 * time.Millisecond) // let the remover start; else removal is immediate

	var docs []store.Document
	var contents [][]byte
	for i := range 5 {
		content, _ := randomContent(t, 20<<10+i)
		doc, ev := f.stageAsAPI(t, content)
		if err := f.fin.Finalize(ctx, ev); err != nil {
			t.Fatal(err)
		}
		docs, contents = append(docs, doc), append(contents, content)
	}
	for i, d := range docs {
		if status, reason := f.status(t, d.ID); status != store.StatusReady {
			t.Fatalf("document %s: %s (%v); want ready", d.ID, status, reason)
		}
		if got := f.read(t, blob.FinalKey(&f.user, d.ID)); !bytes.Equal(got, contents[i]) {
			t.Errorf("final object of %s differs from the upload", d.ID)
		}
	}
	f.waitStagedRemoved(t, docs)
	cancel()
	<-removerDone
}

// A staged object replaced after the upload (another ETag) is not what was
// hashed: the document is rejected and no copy is left.
func TestFinalizeRejectsAReplacedObject(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, _ := randomContent(t, 8<<10)
	doc, ev := f.stageAsAPI(t, content)
	other, _ := randomContent(t, 8<<10)
	if _, err := f.blobs.Put(ctx, blob.StagingKey(doc.ID), bytes.NewReader(other), 1<<30, "application/pdf"); err != nil {
		t.Fatal(err)
	}
	if err := f.fin.Finalize(ctx, ev); err != nil {
		t.Fatal(err)
	}
	status, reason := f.status(t, doc.ID)
	if status != store.StatusRejected || reason == nil || *reason != store.ReasonChecksumMismatch {
		t.Errorf("replaced object: %s %v; want rejected checksum_mismatch", status, reason)
	}
	if f.exists(t, blob.FinalKey(&f.user, doc.ID)) || f.exists(t, blob.StagingKey(doc.ID)) {
		t.Error("an object is left after the rejection")
	}
}

// A crash after the copy (staged object already removed) is repaired by
// the redelivery, which finds and checks the final object.
func TestFinalizeAfterACrashPastTheCopy(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	content, _ := randomContent(t, 8<<10)
	doc, ev := f.stageAsAPI(t, content)
	f.move(t, blob.StagingKey(doc.ID), blob.FinalKey(&f.user, doc.ID))
	if err := f.fin.Finalize(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if status, reason := f.status(t, doc.ID); status != store.StatusReady {
		t.Errorf("after a crash past the copy: %s %v; want ready", status, reason)
	}
}
