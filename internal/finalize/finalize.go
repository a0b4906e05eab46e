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
	"slices"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/tracing"
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
	quota  store.QuotaLimits
	// metrics count outcomes once Instrument was called (nil: not counted).
	metrics *metrics

	// removals queue staged objects for RunRemover, while it runs.
	removals  chan string
	removerOn atomic.Bool

	// batchIn takes uploads to finalise as a group while RunBatches runs
	// (batchOn); batchStop is closed when it stopped.
	batchIn   chan batchReq
	batchStop chan struct{}
	batchOn   atomic.Bool
}

// New returns a Finalizer charging owners' quotas with quota as the default
// limits. notify (may be nil) wakes the relay after the finalizer committed
// events.
func New(log *slog.Logger, db *pgxpool.Pool, blobs *blob.Store, notify *store.Notifier, quota store.QuotaLimits) *Finalizer {
	return &Finalizer{log: log, db: db, blobs: blobs, notify: notify, quota: quota,
		removals: make(chan string, 4096), batchIn: make(chan batchReq), batchStop: make(chan struct{})}
}

// errOverQuota rolls back a finish that would take the owner over quota.
var errOverQuota = errors.New("over quota")

// Handle is the Watermill handler for the document stream: it finalises
// document.uploaded, purges the objects of document.deleted, moves the
// object of a document.updated whose owner changed (Relocate) and ignores
// the other types. The events it writes keep the message's request id and
// continue its trace (tracing.MessageContext).
func (f *Finalizer) Handle(msg *message.Message) error {
	switch msg.Metadata.Get(events.MetaType) {
	case events.DocumentUploaded, events.DocumentDeleted, events.DocumentUpdated, "":
	default:
		return nil // another type (the relay sets it on every message): not decoded
	}
	var ev events.Envelope
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return fmt.Errorf("%w: message %s: %v", ErrMalformed, msg.UUID, err)
	}
	ctx := tracing.MessageContext(msg)
	switch ev.Type {
	case events.DocumentUploaded:
		return f.Finalize(ctx, ev)
	case events.DocumentDeleted:
		return f.Purge(ctx, ev)
	case events.DocumentUpdated:
		return f.Relocate(ctx, ev.AggregateID, &ev)
	}
	return nil
}

// Finalize verifies the staged object of the uploaded document (size and
// SHA-256), copies it server-side to its final key, removes the staging
// object and, in one transaction, marks the document ready (or rejected
// with a reason) with its audit row and event, which carries ctx's request
// id and span (internal/tracing).
//
// Deliveries of the same document are serialised by an advisory lock, so
// a concurrent duplicate waits and then finds the work done, instead of
// racing for the objects (one moving them while the other looks for them).
//
// While RunBatches runs, the upload goes to the group finaliser first,
// which hands back what it does not finish the common way.
func (f *Finalizer) Finalize(ctx context.Context, ev events.Envelope) error {
	if f.batchOn.Load() {
		if took, err := f.finalizeGrouped(ctx, ev); took {
			return err
		}
	}
	conn, err := f.db.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	// One round trip: take the document's lock, then (in that order) see
	// whether this event was handled and read the document.
	lockKey := ev.AggregateID.String()
	batch := &pgx.Batch{}
	batch.Queue(`select pg_advisory_lock(hashtextextended($1, 0))`, lockKey)
	processed := store.QueueProcessed(batch, ConsumerName, ev.ID)
	document := store.QueueGetDocumentAndQuota(batch, ev.AggregateID, f.quota)
	results := conn.SendBatch(ctx, batch)
	_, lockErr := results.Exec()
	done, doneErr := processed(results)
	doc, quota, err := document(results)
	closeErr := results.Close()
	if lockErr != nil {
		return errors.Join(lockErr, closeErr)
	}
	defer unlockDocument(ctx, conn, lockKey)
	if err := errors.Join(doneErr, closeErr); err != nil || done {
		return err
	}
	if errors.Is(err, store.ErrNotFound) {
		f.log.Warn("uploaded event for a document that does not exist",
			append([]any{"document_id", ev.AggregateID}, tracing.EventAttrs(ctx, ev)...)...)
		return nil
	}
	if err != nil {
		return err
	}
	return f.finalize(ctx, conn, ev, doc, quota)
}

// db is what the finalizer runs its statements on: the connection holding
// the document's lock (so a finalisation never waits for a second
// connection while holding one) or the pool.
type db interface {
	store.DBTX
	store.Beginner
}

// unlockDocument releases the document's advisory lock; if that fails the
// connection is closed, so the lock cannot outlive the call.
func unlockDocument(ctx context.Context, conn *pgxpool.Conn, key string) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(uctx, `select pg_advisory_unlock(hashtextextended($1, 0))`, key); err != nil {
		_ = conn.Conn().Close(uctx)
	}
}

// finalize does the work of Finalize for the pending (or not) doc, holding
// its lock on conn.
func (f *Finalizer) finalize(ctx context.Context, conn db, ev events.Envelope, doc store.Document, quota store.Quota) error {
	staging, final := blob.StagingKey(doc.ID), blob.FinalKey(doc.UserID, doc.ID)
	switch doc.Status {
	case store.StatusPending:
	case store.StatusDeleted:
		return f.purge(ctx, conn, doc.ID, doc.UserID, doc.StorageKey)
	default:
		return nil // already finalised (another delivery won)
	}
	if doc.StagingETag != nil {
		if done, err := f.finalizeUnchanged(ctx, conn, ev, doc, quota); done || err != nil {
			return err
		}
		// The staged object is gone: an earlier attempt moved it (or the
		// bytes are lost). The path below checks the final key.
	}

	size, sum, err := f.blobs.Hash(ctx, staging)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		// Either an earlier attempt moved it and crashed before the commit,
		// or the bytes are gone.
		size, sum, err = f.blobs.Hash(ctx, final)
		if errors.Is(err, blob.ErrNotFound) && doc.UserID != nil {
			// An attempt from before the document was given an owner
			// (phase 1, `api migrate --unowned-owner`) moved it under
			// users/_unowned/: bring it under the owner first.
			if err = f.moveObject(ctx, blob.FinalKey(nil, doc.ID), final); err == nil {
				size, sum, err = f.blobs.Hash(ctx, final)
			}
		}
		if errors.Is(err, blob.ErrNotFound) {
			return f.finish(ctx, conn, ev, doc, store.StatusRejected, store.ReasonObjectMissing)
		}
		if err != nil {
			return err
		}
		if reason := verify(doc, size, sum); reason != "" {
			// Never leave a copy that does not match its row.
			if err := f.blobs.Remove(ctx, final); err != nil {
				return err
			}
			return f.finish(ctx, conn, ev, doc, store.StatusRejected, reason)
		}
	case err != nil:
		return err
	default:
		reason := verify(doc, size, sum)
		if reason == "" && doc.UserID != nil {
			// Spare the copy when the quota clearly cannot take it; the
			// charge at commit is what counts.
			q, err := store.GetQuota(ctx, conn, *doc.UserID, f.quota)
			if err != nil {
				return err
			}
			if ok, _ := q.Fits(doc.SizeBytes); !ok {
				reason = store.ReasonQuotaExceeded
			}
		}
		if reason != "" {
			if err := f.blobs.Remove(ctx, final); err != nil { // an earlier attempt's copy
				return err
			}
			if err := f.finish(ctx, conn, ev, doc, store.StatusRejected, reason); err != nil {
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
	err = f.finish(ctx, conn, ev, doc, store.StatusReady, "")
	if errors.Is(err, errOverQuota) {
		// Other uploads took the owner's last bytes meanwhile. Remove the
		// copy before recording the rejection, so that no object outlives
		// it; a crash in between makes the redelivery reject the document
		// as object_missing instead.
		if err := f.blobs.Remove(ctx, final); err != nil {
			return err
		}
		return f.finish(ctx, conn, ev, doc, store.StatusRejected, store.ReasonQuotaExceeded)
	}
	return err
}

// finalizeUnchanged finalises a document whose upload recorded the staged
// object's ETag: one conditional server-side copy (only if the object
// still has that ETag) proves the copy is the very bytes whose size and
// SHA-256 the upload measured (MinIO checked the upload's payload hash on
// receipt), without reading them back. It reports done=false when the
// staged object is gone, for the caller's path that checks the final key.
// The staged object is removed after the commit, in batches (see
// RunRemover); one a crash leaves behind is the sweep's.
func (f *Finalizer) finalizeUnchanged(ctx context.Context, conn db, ev events.Envelope, doc store.Document, quota store.Quota) (done bool, err error) {
	staging, final := blob.StagingKey(doc.ID), blob.FinalKey(doc.UserID, doc.ID)
	reject := func(reason string) (bool, error) {
		// A copy an earlier attempt made (one that crashed before its
		// commit, or a group's, see RunBatches) must not outlive the
		// rejection: removed first, so a crash leaves no object behind a
		// rejected document.
		if err := f.blobs.Remove(ctx, final); err != nil {
			return true, err
		}
		if err := f.finish(ctx, conn, ev, doc, store.StatusRejected, reason); err != nil {
			return true, err
		}
		return true, f.blobs.Remove(ctx, staging)
	}
	if doc.UserID != nil {
		// Spare the copy when the quota clearly cannot take it (as read
		// with the document); the charge at commit is what counts.
		if ok, _ := quota.Fits(doc.SizeBytes); !ok {
			return reject(store.ReasonQuotaExceeded)
		}
	}
	err = f.blobs.CopyIfUnchanged(ctx, staging, *doc.StagingETag, final)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return false, nil
	case errors.Is(err, blob.ErrChanged):
		// Replaced since the upload: not the bytes that were hashed.
		return reject(store.ReasonChecksumMismatch)
	case err != nil:
		return true, err
	}
	err = f.finish(ctx, conn, ev, doc, store.StatusReady, "")
	if errors.Is(err, errOverQuota) {
		if err := f.blobs.Remove(ctx, final); err != nil {
			return true, err
		}
		return reject(store.ReasonQuotaExceeded)
	}
	if err != nil {
		return true, err
	}
	f.removeLater(ctx, staging)
	return true, nil
}

// moveObject copies from to to server-side and removes from: ErrNotFound
// when from does not exist. A crash in between leaves both, and the copy
// is what counts from then on.
func (f *Finalizer) moveObject(ctx context.Context, from, to string) error {
	if err := f.blobs.Copy(ctx, from, to); err != nil {
		return err
	}
	return f.blobs.Remove(ctx, from)
}

// removeLater hands key to the batch remover when it runs, or removes it
// now.
func (f *Finalizer) removeLater(ctx context.Context, key string) {
	if f.removerOn.Load() {
		select {
		case f.removals <- key:
			return
		default: // the remover is behind: do it here
		}
	}
	if err := f.blobs.Remove(ctx, key); err != nil {
		f.log.Warn("remove staged object (the sweep will)", "key", key, "err", err)
	}
}

// RunRemover removes the staged objects of finalised documents in batches
// (one request for up to 500 keys) until ctx ends, then removes what is
// queued. A key lost in a crash stays staged until the sweep removes it
// (staged objects of documents no longer pending, after the grace period).
func (f *Finalizer) RunRemover(ctx context.Context) {
	f.removerOn.Store(true)
	defer f.removerOn.Store(false)
	const most, wait = 500, 20 * time.Millisecond
	var keys []string
	flush := func(ctx context.Context) {
		if len(keys) == 0 {
			return
		}
		if err := f.blobs.RemoveMany(ctx, keys); err != nil {
			f.log.Warn("remove staged objects (the sweep will)", "count", len(keys), "err", err)
		}
		keys = keys[:0]
	}
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				select {
				case k := <-f.removals:
					keys = append(keys, k)
					if len(keys) == most {
						flush(dctx)
					}
				default:
					flush(dctx)
					return
				}
			}
		case k := <-f.removals:
			keys = append(keys, k)
			timer := time.NewTimer(wait)
		collect:
			for len(keys) < most {
				select {
				case k := <-f.removals:
					keys = append(keys, k)
				case <-timer.C:
					break collect
				case <-ctx.Done():
					break collect
				}
			}
			timer.Stop()
			flush(context.WithoutCancel(ctx))
		}
	}
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

// finish commits the outcome: the status change, the owner's quota charge
// (for ready; errOverQuota if it does not fit), the consumer's processed
// mark, the audit row and the finalized/rejected event, all or nothing. If
// the document stopped being pending meanwhile (another delivery finished
// first, or it was deleted) it writes nothing; for a deleted document it
// removes the copy this attempt made.
func (f *Finalizer) finish(ctx context.Context, conn db, ev events.Envelope, doc store.Document, status, reason string) error {
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
	var err error
	if status == store.StatusRejected || doc.UserID == nil {
		// No quota to charge: the whole effect is one statement.
		expected := doc
		expected.Status, expected.RejectReason = status, reasonPtr
		if key != "" {
			expected.StorageKey = key
		}
		var out events.Envelope
		if out, err = events.New(typ, "document", doc.ID, events.System, ev.CorrelationID, &ev, expected.EventData()); err != nil {
			return err
		}
		var done bool
		done, err = store.FinishAndRecord(ctx, conn, ConsumerName, ev.ID, doc.ID, status, key, reasonPtr, out, origin(ctx))
		stale = err == nil && !done
	} else {
		err = f.finishCharged(ctx, conn, ev, doc, key, &stale)
	}
	if err != nil {
		return err
	}
	if stale {
		cur, err := store.GetDocument(ctx, conn, doc.ID)
		if err == nil && cur.Status == store.StatusDeleted {
			return f.purge(ctx, conn, doc.ID, doc.UserID, cur.StorageKey)
		}
		return err
	}
	f.notify.Poke()
	f.metrics.finished(status, reason)
	attrs := append([]any{"document_id", doc.ID}, tracing.EventAttrs(ctx, ev)...)
	if status == store.StatusRejected {
		// Callers removed any copy before; a copy request an earlier
		// attempt gave up on (a timeout) may still have landed since.
		if err := f.blobs.Remove(ctx, final); err != nil {
			f.log.Warn("remove the final key of a rejected document", append(attrs, "err", err)...)
		}
		f.log.Warn("document rejected", append(attrs, "reason", reason)...)
	} else {
		f.log.Info("document ready", append(attrs, "size_bytes", doc.SizeBytes)...)
	}
	return nil
}

// origin is the origin of the events written while handling an event in
// ctx: its request id and the handler's span.
func origin(ctx context.Context) store.Origin {
	return store.Origin{RequestID: tracing.RequestID(ctx), Traceparent: tracing.Traceparent(ctx)}
}

// finishCharged is finish for a document that becomes ready and has an
// owner: the quota charge decides, in the same statement
// (store.FinishChargedAndRecord); errOverQuota when it does not fit. A
// document whose topic or folder changed since it was read is read again,
// so that its event carries it as it is.
func (f *Finalizer) finishCharged(ctx context.Context, conn db, ev events.Envelope, doc store.Document, key string, stale *bool) error {
	for range 5 {
		expected := doc
		expected.Status, expected.StorageKey = store.StatusReady, key
		out, err := events.New(events.DocumentFinalized, "document", doc.ID, events.System, ev.CorrelationID, &ev, expected.EventData())
		if err != nil {
			return err
		}
		outcome, err := store.FinishChargedAndRecord(ctx, conn, ConsumerName, ev.ID, doc, key, f.quota, out, origin(ctx))
		switch {
		case err != nil:
			return err
		case outcome == store.Charged:
			return nil
		case outcome == store.ChargeRefused:
			return errOverQuota
		case outcome == store.ChargeNoRow:
			if err := store.EnsureQuotaRow(ctx, conn, *doc.UserID); err != nil {
				return err
			}
			continue
		}
		// Not applied: handled before, no longer pending, or changed.
		handled, err := store.Processed(ctx, conn, ConsumerName, ev.ID)
		if err != nil {
			return err
		}
		cur, err := store.GetDocument(ctx, conn, doc.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if handled || err != nil || cur.Status != store.StatusPending {
			*stale = true
			return nil
		}
		doc = cur
	}
	return errors.New("finalize: the document or its owner's quota row keeps changing")
}

// Purge removes the objects of a deleted document, wherever they are.
func (f *Finalizer) Purge(ctx context.Context, ev events.Envelope) error {
	var data events.Document
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		return fmt.Errorf("%w: event %s data: %v", ErrMalformed, ev.ID, err)
	}
	return f.purge(ctx, f.db, ev.AggregateID, data.UserID, data.StorageKey)
}

// purge removes every possible object of a deleted document (staged, at
// its final key, and at the key its row last named, which differs for a
// phase 1 document given an owner and not moved yet) and records that
// they are gone.
func (f *Finalizer) purge(ctx context.Context, conn db, id uuid.UUID, owner *uuid.UUID, storageKey string) error {
	keys := []string{blob.StagingKey(id), blob.FinalKey(owner, id)}
	if storageKey != "" && !slices.Contains(keys, storageKey) {
		keys = append(keys, storageKey)
	}
	for _, k := range keys {
		if err := f.blobs.Remove(ctx, k); err != nil {
			return fmt.Errorf("remove %s: %w", k, err)
		}
	}
	return store.MarkPurged(ctx, conn, id)
}
