package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/docuvault/docuvault/internal/events"
)

// Document statuses.
const (
	StatusPending  = "pending"
	StatusReady    = "ready"
	StatusRejected = "rejected"
	StatusDeleted  = "deleted"
)

// Reasons a document is rejected.
const (
	ReasonChecksumMismatch = "checksum_mismatch"
	ReasonSizeMismatch     = "size_mismatch"
	ReasonObjectMissing    = "object_missing"
	ReasonQuotaExceeded    = "quota_exceeded" // the owner's quota could not take it
)

var (
	// ErrUnknownTopic means a topic_id names no topic of the owner.
	ErrUnknownTopic = errors.New("unknown topic")
	// ErrUnknownFolder means a folder_id names no folder of the owner.
	ErrUnknownFolder = errors.New("unknown folder")
)

// Document is a row of documents.
type Document struct {
	ID             uuid.UUID
	UserID         *uuid.UUID
	TopicID        *uuid.UUID
	FolderID       *uuid.UUID
	Title          string
	Filename       string
	ContentType    string
	SizeBytes      int64
	SHA256         []byte
	Status         string
	RejectReason   *string
	StorageKey     string
	DuplicateOf    *uuid.UUID
	IdempotencyKey *string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinalizedAt    *time.Time
	DeletedAt      *time.Time
	// StagingETag is the ETag of the staged object the upload wrote (nil
	// for documents uploaded before it was recorded).
	StagingETag *string
}

// EventData is the document as events carry it.
func (d Document) EventData() events.Document {
	return events.Document{
		ID: d.ID, UserID: d.UserID, TopicID: d.TopicID, FolderID: d.FolderID,
		Title: d.Title, Filename: d.Filename, ContentType: d.ContentType,
		SizeBytes: d.SizeBytes, SHA256: hex.EncodeToString(d.SHA256),
		Status: d.Status, StorageKey: d.StorageKey, RejectReason: d.RejectReason,
		DuplicateOf: d.DuplicateOf,
	}
}

const documentColumns = `id, user_id, topic_id, folder_id, title, filename, content_type, size_bytes, sha256,
	status, reject_reason, storage_key, duplicate_of, idempotency_key, created_at, updated_at, finalized_at, deleted_at,
	staging_etag`

func scanDocument(row pgx.Row) (Document, error) {
	var d Document
	err := row.Scan(documentTargets(&d)...)
	return d, translate(err)
}

// documentTargets are the scan targets of documentColumns in d.
func documentTargets(d *Document) []any {
	return []any{&d.ID, &d.UserID, &d.TopicID, &d.FolderID, &d.Title, &d.Filename, &d.ContentType,
		&d.SizeBytes, &d.SHA256, &d.Status, &d.RejectReason, &d.StorageKey, &d.DuplicateOf,
		&d.IdempotencyKey, &d.CreatedAt, &d.UpdatedAt, &d.FinalizedAt, &d.DeletedAt, &d.StagingETag}
}

// prefixedDocumentColumns is documentColumns of the table aliased d.
var prefixedDocumentColumns = func() string {
	cols := strings.Split(documentColumns, ",")
	for i, c := range cols {
		cols[i] = "d." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}()

// insertDocumentSQL inserts a pending document. Its topic and folder must
// be its owner's: one of another owner is refused as unknown (ownedRef).
var insertDocumentSQL = `insert into documents (id, user_id, topic_id, folder_id, title, filename, content_type,
		size_bytes, sha256, status, storage_key, duplicate_of, idempotency_key, staging_etag)
	values ($1, $2, ` + ownedRef("topics", "$3", "$2::uuid") + `, ` + ownedRef("folders", "$4", "$2::uuid") + `,
		$5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13)
	returning ` + documentColumns

func insertDocumentArgs(d Document) []any {
	return []any{d.ID, d.UserID, d.TopicID, d.FolderID, d.Title, d.Filename, d.ContentType,
		d.SizeBytes, d.SHA256, d.StorageKey, d.DuplicateOf, d.IdempotencyKey, d.StagingETag}
}

// InsertDocument inserts d (status pending) in tx. It returns ErrUnknownTopic
// or ErrUnknownFolder when those references do not exist or belong to
// another owner than d's, and ErrConflict when d's idempotency key was
// used before.
func InsertDocument(ctx context.Context, tx pgx.Tx, d Document) (Document, error) {
	doc, err := scanDocument(tx.QueryRow(ctx, insertDocumentSQL, insertDocumentArgs(d)...))
	return doc, documentError(err)
}

func documentError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation
		switch pgErr.ConstraintName {
		case "documents_topic_id_fkey":
			return ErrUnknownTopic
		case "documents_folder_id_fkey":
			return ErrUnknownFolder
		}
	}
	return err
}

// Batcher sends a batch of statements; *pgxpool.Pool and *pgx.Conn are
// Batchers.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// InsertUpload inserts the pending document d with its audit row and its
// document.uploaded event ev in one round trip: a batch without explicit
// transaction control runs in one implicit transaction, so all three rows
// commit together or none does. Errors are InsertDocument's.
//
// An error that is not a *pgconn.PgError (the connection broke) leaves the
// outcome unknown: the rows may have committed.
func InsertUpload(ctx context.Context, db Batcher, d Document, ev events.Envelope, origin Origin) (Document, error) {
	batch := &pgx.Batch{}
	var doc Document
	var scanErr error
	batch.Queue(insertDocumentSQL, insertDocumentArgs(d)...).QueryRow(func(row pgx.Row) error {
		doc, scanErr = scanDocument(row)
		return scanErr
	})
	if err := queueRecord(batch, ev, origin); err != nil {
		return doc, err
	}
	err := db.SendBatch(ctx, batch).Close()
	if scanErr != nil {
		return doc, documentError(scanErr)
	}
	return doc, documentError(translate(err))
}

// GetDocument returns the document with id whoever owns it, or
// ErrNotFound. It is the pipeline's; requests use DocumentIn.
func GetDocument(ctx context.Context, db DBTX, id uuid.UUID) (Document, error) {
	return scanDocument(db.QueryRow(ctx, `select `+documentColumns+` from documents where id = $1`, id))
}

// DocumentIn returns the document with id if it is in scope, or
// ErrNotFound (also when another owner has it).
func DocumentIn(ctx context.Context, db DBTX, scope Scope, id uuid.UUID) (Document, error) {
	return scanDocument(db.QueryRow(ctx, `select `+documentColumns+` from documents
		where id = $1 and `+scope.match("user_id", 2), id, scope.arg()))
}

// DocumentByIdempotencyKey returns the document an earlier upload of owner
// with key created, or ErrNotFound.
func DocumentByIdempotencyKey(ctx context.Context, db DBTX, owner *uuid.UUID, key string) (Document, error) {
	// The predicate matches the expression of documents_idempotency_key.
	return scanDocument(db.QueryRow(ctx, `select `+documentColumns+` from documents
		where coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid) = coalesce($1, '00000000-0000-0000-0000-000000000000'::uuid)
		  and idempotency_key = $2`, owner, key))
}

// DocumentFilter selects documents for ListDocuments. Nil fields do not
// filter. After is the keyset cursor: only documents with a smaller id
// (older) are returned.
type DocumentFilter struct {
	Status   string
	TopicID  *uuid.UUID
	FolderID *uuid.UUID
	After    *uuid.UUID
	Limit    int
}

// ListDocuments returns the documents in scope newest first (ids are
// UUIDv7), excluding deleted ones unless Status asks for them. A topic or
// folder of another owner selects nothing, like one that does not exist.
func ListDocuments(ctx context.Context, db DBTX, scope Scope, f DocumentFilter) ([]Document, error) {
	// The owner condition lets documents_owner_idx (user_id, id) and
	// documents_owner_status_idx (user_id, status, id) serve the page.
	rows, err := db.Query(ctx, `select `+documentColumns+` from documents
		where `+scope.match("user_id", 6)+`
		  and ($1 = '' and status <> 'deleted' or status = $1)
		  and ($2::uuid is null or topic_id = $2)
		  and ($3::uuid is null or folder_id = $3)
		  and ($4::uuid is null or id < $4)
		order by id desc limit $5`, f.Status, f.TopicID, f.FolderID, f.After, f.Limit, scope.arg())
	if err != nil {
		return nil, translate(err)
	}
	docs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Document, error) { return scanDocument(row) })
	return docs, translate(err)
}

// FinishDocument moves a pending document to ready (at finalKey) or to
// rejected (with reason) in tx. It returns ErrNotFound when the document is
// no longer pending (finalised or deleted meanwhile): the caller then writes
// no event.
func FinishDocument(ctx context.Context, tx pgx.Tx, id uuid.UUID, status, finalKey string, reason *string) (Document, error) {
	if status != StatusReady && status != StatusRejected {
		return Document{}, fmt.Errorf("finish document: bad status %q", status)
	}
	return scanDocument(tx.QueryRow(ctx, `update documents
		set status = $2, storage_key = coalesce(nullif($3, ''), storage_key), reject_reason = $4,
		    finalized_at = now(), updated_at = now()
		where id = $1 and status = 'pending'
		returning `+documentColumns, id, status, finalKey, reason))
}

// MarkDeleted is DeleteDocument of any owner's document (the pipeline's).
func MarkDeleted(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Document, error) {
	return DeleteDocument(ctx, tx, Everyone(), id)
}

// DeleteDocument soft-deletes the document in tx if it is in scope and,
// if it was ready and owned, frees its bytes from the owner's quota in the
// same statement (so exactly once: only the transition to deleted frees).
// It returns ErrNotFound when there is no such document in scope or it is
// already deleted.
func DeleteDocument(ctx context.Context, tx pgx.Tx, scope Scope, id uuid.UUID) (Document, error) {
	return scanDocument(tx.QueryRow(ctx, `with old as (
			select id as old_id, status as old_status, user_id as old_user, size_bytes as old_size
			from documents where id = $1 and status <> 'deleted' and `+scope.match("user_id", 2)+` for update),
		freed as (
			update quotas set used_bytes = used_bytes - old_size, used_documents = used_documents - 1, updated_at = now()
			from old where old_status = 'ready' and user_id = old_user)
		update documents set status = 'deleted', deleted_at = now(), updated_at = now(), reject_reason = null
		from old where id = old_id
		returning `+documentColumns, id, scope.arg()))
}

// detachDocuments sets column (topic_id or folder_id) to null on the
// documents of owner, not deleted, where it is id, and returns them as
// they are now, in id order. (A topic or folder only holds documents of
// its own owner: InsertDocument refuses any other.) It locks them in id
// order before it changes them, so that the events the caller writes
// about them get outbox ids in commit order (docs/events.md), and two
// such statements cannot deadlock. One statement, whatever the number of
// documents.
func detachDocuments(ctx context.Context, tx pgx.Tx, column string, id uuid.UUID, owner *uuid.UUID) ([]Document, error) {
	if column != "topic_id" && column != "folder_id" {
		return nil, fmt.Errorf("detach documents: bad column %q", column)
	}
	rows, err := tx.Query(ctx, `update documents set `+column+` = null, updated_at = now()
		where id in (select id from documents where `+column+` = $1 and status <> 'deleted'
			and `+OwnedBy(owner).match("user_id", 2)+`
			order by id for no key update)
		returning `+documentColumns, id, owner)
	if err != nil {
		return nil, translate(err)
	}
	docs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Document, error) { return scanDocument(row) })
	if err != nil {
		return nil, translate(err)
	}
	// UPDATE ... RETURNING gives no order.
	slices.SortFunc(docs, func(a, b Document) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return docs, nil
}

// MarkPurged records that the objects of deleted document id are gone.
func MarkPurged(ctx context.Context, db DBTX, id uuid.UUID) error {
	_, err := db.Exec(ctx, `update documents set purged_at = now() where id = $1 and status = 'deleted' and purged_at is null`, id)
	return translate(err)
}

// Unpurged returns up to limit deleted documents, deleted before
// olderThan ago, whose objects were not confirmed removed.
func Unpurged(ctx context.Context, db DBTX, olderThan time.Duration, limit int) ([]Document, error) {
	rows, err := db.Query(ctx, `select `+documentColumns+` from documents
		where status = 'deleted' and purged_at is null and deleted_at < now() - $1::interval
		order by deleted_at limit $2`, olderThan, limit)
	if err != nil {
		return nil, translate(err)
	}
	docs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Document, error) { return scanDocument(row) })
	return docs, translate(err)
}

// MarkProcessed records that consumer handled eventID, in the transaction
// of the change it made. It reports false when it was recorded before (a
// duplicate delivery).
func MarkProcessed(ctx context.Context, tx pgx.Tx, consumer string, eventID uuid.UUID) (bool, error) {
	tag, err := tx.Exec(ctx, `insert into processed_events (consumer, event_id) values ($1, $2)
		on conflict do nothing`, consumer, eventID)
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

// Processed reports whether consumer already handled eventID.
func Processed(ctx context.Context, db DBTX, consumer string, eventID uuid.UUID) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `select exists (select 1 from processed_events where consumer = $1 and event_id = $2)`,
		consumer, eventID).Scan(&ok)
	return ok, translate(err)
}

// QueueProcessed adds Processed to batch; the returned function reads its
// result, in queue order.
func QueueProcessed(batch *pgx.Batch, consumer string, eventID uuid.UUID) func(pgx.BatchResults) (bool, error) {
	batch.Queue(`select exists (select 1 from processed_events where consumer = $1 and event_id = $2)`, consumer, eventID)
	return func(br pgx.BatchResults) (bool, error) {
		var ok bool
		err := br.QueryRow().Scan(&ok)
		return ok, translate(err)
	}
}

// PendingDocumentIDs reports which of ids are documents still pending. A
// staged object of any other id (no row: its transaction never committed;
// or no longer pending) is an orphan.
func PendingDocumentIDs(ctx context.Context, db DBTX, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	return collectIDSet(db.Query(ctx, `select id from documents where id = any($1) and status = 'pending'`, ids))
}

// collectIDSet reads rows of one uuid column into a set.
func collectIDSet(rows pgx.Rows, err error) (map[uuid.UUID]bool, error) {
	if err != nil {
		return nil, translate(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, translate(err)
	}
	set := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return set, nil
}

// QueueProcessedAmong adds to batch the check of which of eventIDs
// consumer already handled; the returned function reads them, in queue
// order.
func QueueProcessedAmong(batch *pgx.Batch, consumer string, eventIDs []uuid.UUID) func(pgx.BatchResults) (map[uuid.UUID]bool, error) {
	batch.Queue(`select event_id from processed_events where consumer = $1 and event_id = any($2)`, consumer, eventIDs)
	return func(br pgx.BatchResults) (map[uuid.UUID]bool, error) {
		return collectIDSet(br.Query())
	}
}
