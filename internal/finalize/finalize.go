// Package finalize moves uploads from staging to their final key and marks
// them ready or rejected, removes the objects of deleted documents, and
// sweeps what crashes leave behind.
//
// Every step is idempotent and keyed by event id: the same event delivered
// twice, ten times or concurrently to two consumers has the effect of one.
// Object moves happen before the database commit and are repeatable (copy
// and remove are idempotent), so a crash at any point is repaired by the
// redelivery of the same event.
package finalize

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

// ConsumerName identifies this consumer in processed_events and its Redis
// consumer group.
const ConsumerName = "finalize"

// ErrMalformed marks an event that can never be handled (bad JSON): it goes
// to the dead-letter stream at once instead of being retried.
var ErrMalformed = errors.New("malformed event")

// Finalizer handles the document stream.
type Finalizer struct {
	log    *slog.Logger
	db     *pgxpool.Pool
	blobs  *blob.Store
	notify *store.Notifier
}

// New returns a Finalizer. notify (may be nil) wakes the relay after the
// finalizer committed events.
func New(log *slog.Logger, db *pgxpool.Pool, blobs *blob.Store, notify *store.Notifier) *Finalizer {
	return &Finalizer{log: log, db: db, blobs: blobs, notify: notify}
}

// Handle is the Watermill handler for the document stream: it finalises
// document.uploaded, purges the objects of document.deleted and ignores
// the other types.
func (f *Finalizer) Handle(msg *message.Message) error {
	var ev events.Envelope
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return fmt.Errorf("%w: message %s: %v", ErrMalformed, msg.UUID, err)
	}
	ctx := msg.Context()
	switch ev.Type {
	case events.DocumentUploaded:
		return f.Finalize(ctx, ev)
	case events.DocumentDeleted:
		return f.Purge(ctx, ev)
	}
	return nil
}

// Finalize verifies the staged object of the uploaded document (size and
// SHA-256), copies it server-side to its final key, removes the staging
// object and, in one transaction, marks the document ready (or rejected
// with a reason) with its audit row and event.
func (f *Finalizer) Finalize(ctx context.Context, ev events.Envelope) error {
	if done, err := store.Processed(ctx, f.db, ConsumerName, ev.ID); err != nil || done {
		return err
	}
	doc, err := store.GetDocument(ctx, f.db, ev.AggregateID)
	if errors.Is(err, store.ErrNotFound) {
		f.log.Warn("uploaded event for a document that does not exist", "document_id", ev.AggregateID, "event_id", ev.ID)
		return nil
	}
	if err != nil {
		return err
	}
	staging, final := blob.StagingKey(doc.ID), blob.FinalKey(doc.UserID, doc.ID)
	switch doc.Status {
	case store.StatusPending:
	case store.StatusDeleted:
		return f.purge(ctx, doc.ID, doc.UserID)
	default:
		return nil // already finalised (another delivery won)
	}

	size, sum, err := f.blobs.Hash(ctx, staging)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		// Either an earlier attempt moved it and crashed before the commit,
		// or the bytes are gone.
		size, sum, err = f.blobs.Hash(ctx, final)
		if errors.Is(err, blob.ErrNotFound) {
			return f.finish(ctx, ev, doc, store.StatusRejected, store.ReasonObjectMissing)
		}
		if err != nil {
			return err
		}
		if reason := verify(doc, size, sum); reason != "" {
			// Never leave a copy that does not match its row.
			if err := f.blobs.Remove(ctx, final); err != nil {
				return err
			}
			return f.finish(ctx, ev, doc, store.StatusRejected, reason)
		}
	case err != nil:
		return err
	default:
		if reason := verify(doc, size, sum); reason != "" {
			if err := f.finish(ctx, ev, doc, store.StatusRejected, reason); err != nil {
				return err
			}
			return f.blobs.Remove(ctx, staging)
		}
		if err := f.blobs.Copy(ctx, staging, final); err != nil {
			return err
		}
		if err := f.blobs.Remove(ctx, staging); err != nil {
			return err
		}
	}
	return f.finish(ctx, ev, doc, store.StatusReady, "")
}

// verify returns the reject reason for an object that does not match its
// row, or "".
func verify(doc store.Document, size int64, sum []byte) string {
	switch {
	case size != doc.SizeBytes:
		return store.ReasonSizeMismatch
	case !bytes.Equal(sum, doc.SHA256):
		return store.ReasonChecksumMismatch
	}
	return ""
}

// finish commits the outcome: the status change, the consumer's processed
// mark, the audit row and the finalized/rejected event, all or nothing. If
// the document stopped being pending meanwhile (another delivery finished
// first, or it was deleted) it writes nothing; for a deleted document it
// removes the copy this attempt made.
func (f *Finalizer) finish(ctx context.Context, ev events.Envelope, doc store.Document, status, reason string) error {
	final := blob.FinalKey(doc.UserID, doc.ID)
	var reasonPtr *string
	key := ""
	typ := events.DocumentFinalized
	if status == store.StatusRejected {
		reasonPtr = &reason
		typ = events.DocumentRejected
	} else {
		key = final
	}
	stale := false
	err := store.WithTx(ctx, f.db, func(tx pgx.Tx) error {
		fresh, err := store.MarkProcessed(ctx, tx, ConsumerName, ev.ID)
		if err != nil {
			return err
		}
		if !fresh {
			stale = true
			return nil
		}
		updated, err := store.FinishDocument(ctx, tx, doc.ID, status, key, reasonPtr)
		if errors.Is(err, store.ErrNotFound) {
			stale = true
			return nil
		}
		if err != nil {
			return err
		}
		out, err := events.New(typ, "document", doc.ID, events.System, ev.CorrelationID, &ev, updated.EventData())
		if err != nil {
			return err
		}
		return store.Record(ctx, tx, out, store.Origin{})
	})
	if err != nil {
		return err
	}
	if stale {
		cur, err := store.GetDocument(ctx, f.db, doc.ID)
		if err == nil && cur.Status == store.StatusDeleted {
			return f.purge(ctx, doc.ID, doc.UserID)
		}
		return err
	}
	f.notify.Poke()
	if status == store.StatusRejected {
		f.log.Warn("document rejected", "document_id", doc.ID, "reason", reason, "event_id", ev.ID)
	} else {
		f.log.Info("document ready", "document_id", doc.ID, "size_bytes", doc.SizeBytes, "event_id", ev.ID)
	}
	return nil
}

// Purge removes the objects of a deleted document, wherever they are.
func (f *Finalizer) Purge(ctx context.Context, ev events.Envelope) error {
	var data events.Document
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		return fmt.Errorf("%w: event %s data: %v", ErrMalformed, ev.ID, err)
	}
	return f.purge(ctx, ev.AggregateID, data.UserID)
}

// purge removes both possible objects of a deleted document and records
// that they are gone.
func (f *Finalizer) purge(ctx context.Context, id uuid.UUID, owner *uuid.UUID) error {
	for _, k := range []string{blob.StagingKey(id), blob.FinalKey(owner, id)} {
		if err := f.blobs.Remove(ctx, k); err != nil {
			return fmt.Errorf("remove %s: %w", k, err)
		}
	}
	return store.MarkPurged(ctx, f.db, id)
}
