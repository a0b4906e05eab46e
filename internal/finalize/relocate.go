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

// errObjectLost is a ready document's object found neither at its key nor
// where it was being moved.
var errObjectLost = errors.New("object lost")

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
		// commit, purged because the document was deleted meanwhile, or
		// lost. Only the first can be repaired; the second is not ours.
		if _, statErr := f.blobs.Stat(ctx, to); statErr != nil {
			if cur, err := store.GetDocument(ctx, f.db, id); err != nil || cur.Status != store.StatusReady || cur.StorageKey != from {
				return nil
			}
			return fmt.Errorf("%w: document %s: object missing at %s and %s", errObjectLost, id, from, to)
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
		// The row no longer points at from: moved by another attempt (the
		// copy is in use), or deleted, and the purge may already have run,
		// so the copy made here would outlive the document: remove it.
		cur, err := store.GetDocument(ctx, f.db, id)
		if err == nil && cur.Status != store.StatusDeleted && cur.StorageKey == to {
			return nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return f.blobs.Remove(ctx, to)
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
		// One document whose object is lost must not hold up the others
		// (nor the clean-up below); the invariant checker reports it.
		switch err := f.Relocate(ctx, id, nil); {
		case errors.Is(err, errObjectLost):
			f.log.Error("cannot move a document's object under its owner", "document_id", id, "err", err)
		case err != nil:
			return moved, 0, err
		default:
			moved++
		}
	}
	// Phase 1 keeps its objects there: nothing is left over before every
	// document has an owner.
	if phase1, err := store.AnyUnownedDocument(ctx, f.db); err != nil || phase1 {
		return moved, 0, err
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
		return moved, 0, err
	}
	inUse, err := store.StorageKeysInUse(ctx, f.db, prefix, old)
	if err != nil {
		return moved, 0, err
	}
	var gone []string
	for _, k := range old {
		if !inUse[k] {
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		if err := f.blobs.RemoveMany(ctx, gone); err != nil {
			return moved, 0, err
		}
	}
	return moved, len(gone), nil
}
