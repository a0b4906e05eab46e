package finalize

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

// Relocate moves a ready document's object to the key its owner's prefix
// gives it, when it is elsewhere: documents phase 1 stored under
// users/_unowned/ and `api migrate --unowned-owner` then gave to a user
// (their document.updated brings them here, and the sweep finds any whose
// event was lost). The object is copied server-side, the row's storage_key
// changed with its audit row and a document.updated event (caused by ev,
// if any) in one transaction, and the old object removed after the commit.
// Idempotent: a document already in place, no longer ready or gone is left
// alone; a crash before the commit leaves a copy the next attempt
// overwrites, one after it leaves the old object, which the sweep removes
// (relocateMisplaced).
func (f *Finalizer) Relocate(ctx context.Context, id uuid.UUID, cause *events.Envelope) error {
	doc, err := store.GetDocument(ctx, f.db, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if doc.Status != store.StatusReady || doc.UserID == nil {
		return nil
	}
	from, to := doc.StorageKey, blob.FinalKey(doc.UserID, doc.ID)
	if from == to {
		return nil
	}
	err = f.blobs.Copy(ctx, from, to)
	if errors.Is(err, blob.ErrNotFound) {
		// Gone from the old key: moved by an attempt that died before its
		// commit, or lost. Only the former can be repaired.
		if _, statErr := f.blobs.Stat(ctx, to); statErr != nil {
			return fmt.Errorf("relocate document %s: object missing at %s and %s", id, from, to)
		}
	} else if err != nil {
		return err
	}
	correlation := uuid.Must(uuid.NewV7())
	if cause != nil {
		correlation = cause.CorrelationID
	}
	moved := false
	err = store.WithTx(ctx, f.db, func(tx pgx.Tx) error {
		d, ok, err := store.MoveDocumentObject(ctx, tx, id, from, to)
		if err != nil || !ok {
			return err
		}
		moved = true
		ev, err := events.New(events.DocumentUpdated, "document", id, events.System, correlation, cause, d.EventData())
		if err != nil {
			return err
		}
		return store.Record(ctx, tx, ev, origin(ctx))
	})
	if err != nil {
		return err
	}
	if !moved {
		// Deleted or moved meanwhile: the row no longer points at from, so
		// the copy made here is the purge's (deleted) or already in use.
		return nil
	}
	f.notify.Poke()
	f.log.Info("document object moved under its owner", "document_id", id, "from", from, "to", to)
	if err := f.blobs.Remove(ctx, from); err != nil {
		f.log.Warn("remove the old object (the sweep will)", "key", from, "err", err)
	}
	return nil
}

// relocateMisplaced moves the objects of up to limit ready documents still
// stored under users/_unowned/ although they have an owner (their
// document.updated was lost), then removes objects under users/_unowned/
// older than grace that no row points at any more (a move that committed
// but died before removing the old object, or a document deleted for good
// by `api migrate --unowned-delete`). The grace keeps a finalisation's copy,
// made before its commit points the row at it, from looking abandoned.
func (f *Finalizer) relocateMisplaced(ctx context.Context, grace time.Duration, limit int) (moved, removed int, err error) {
	ids, err := store.MisplacedDocuments(ctx, f.db, limit)
	if err != nil {
		return 0, 0, err
	}
	for _, id := range ids {
		if err := f.Relocate(ctx, id, nil); err != nil {
			return 0, 0, err
		}
	}
	// Phase 1 keeps its objects there: nothing is left over before every
	// document has an owner.
	if phase1, err := store.AnyUnownedDocument(ctx, f.db); err != nil || phase1 {
		return len(ids), 0, err
	}
	const prefix = "users/_unowned/documents/"
	cutoff := time.Now().Add(-grace)
	var old []string
	err = f.blobs.List(ctx, prefix, func(key string, info minio.ObjectInfo) error {
		if info.LastModified.Before(cutoff) && len(old) < limit {
			old = append(old, key)
		}
		return nil
	})
	if err != nil || len(old) == 0 {
		return len(ids), 0, err
	}
	inUse, err := store.StorageKeysInUse(ctx, f.db, prefix, old)
	if err != nil {
		return len(ids), 0, err
	}
	var gone []string
	for _, k := range old {
		if !inUse[k] {
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		if err := f.blobs.RemoveMany(ctx, gone); err != nil {
			return len(ids), 0, err
		}
	}
	return len(ids), len(gone), nil
}
