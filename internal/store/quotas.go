package store

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// QuotaLimits are a quota's limits; the configured defaults apply to every
// owner whose quotas row sets none.
type QuotaLimits struct {
	Bytes     int64
	Documents int64
}

// Quota is an owner's effective limits and usage.
type Quota struct {
	UserID        uuid.UUID
	MaxBytes      int64
	MaxDocuments  int64
	UsedBytes     int64
	UsedDocuments int64
}

// Fits reports whether one more document of size bytes fits, and if not
// which limit it breaks ("bytes" or "documents").
func (q Quota) Fits(size int64) (bool, string) {
	switch {
	case q.UsedBytes+size > q.MaxBytes:
		return false, "bytes"
	case q.UsedDocuments+1 > q.MaxDocuments:
		return false, "documents"
	}
	return true, ""
}

// GetQuota returns user's effective quota: its row's limits, or def where
// the row sets none (or there is no row yet).
func GetQuota(ctx context.Context, db DBTX, user uuid.UUID, def QuotaLimits) (Quota, error) {
	q := Quota{UserID: user, MaxBytes: def.Bytes, MaxDocuments: def.Documents}
	err := db.QueryRow(ctx, `select coalesce(max_bytes, $2), coalesce(max_documents, $3), used_bytes, used_documents
		from quotas where user_id = $1`, user, def.Bytes, def.Documents).
		Scan(&q.MaxBytes, &q.MaxDocuments, &q.UsedBytes, &q.UsedDocuments)
	if errors.Is(err, pgx.ErrNoRows) {
		return q, nil
	}
	return q, translate(err)
}

// SetQuotaLimits sets user's own limits (nil: the default).
func SetQuotaLimits(ctx context.Context, db DBTX, user uuid.UUID, maxBytes, maxDocuments *int64) error {
	_, err := db.Exec(ctx, `insert into quotas (user_id, max_bytes, max_documents) values ($1, $2, $3)
		on conflict (user_id) do update set max_bytes = $2, max_documents = $3, updated_at = now()`,
		user, maxBytes, maxDocuments)
	return translate(err)
}

// UploadChecks reads, in one statement, what an upload of owner's with
// content sha256 is checked against before it is recorded: the owner's
// effective quota (def where the row sets none, or there is no row) and
// the oldest pending or ready document of the owner with the same
// content, if any (nil).
func UploadChecks(ctx context.Context, db DBTX, owner uuid.UUID, sha256 []byte, def QuotaLimits) (Quota, *uuid.UUID, error) {
	q := Quota{UserID: owner}
	var dup *uuid.UUID
	err := db.QueryRow(ctx, `select coalesce(q.max_bytes, $3), coalesce(q.max_documents, $4),
			coalesce(q.used_bytes, 0), coalesce(q.used_documents, 0),
			(select d.id from documents d where d.user_id = $1 and d.sha256 = $2 and d.status in ('pending', 'ready')
				order by d.id limit 1)
		from (select) one left join quotas q on q.user_id = $1`, owner, sha256, def.Bytes, def.Documents).
		Scan(&q.MaxBytes, &q.MaxDocuments, &q.UsedBytes, &q.UsedDocuments, &dup)
	return q, dup, translate(err)
}

// QueueGetDocumentAndQuota adds to batch the read of document id with its
// owner's effective quota (def where the row sets none, or there is no
// row; zero when the document has no owner); the returned function reads
// its result, in queue order: ErrNotFound when there is no document.
func QueueGetDocumentAndQuota(batch *pgx.Batch, id uuid.UUID, def QuotaLimits) func(pgx.BatchResults) (Document, Quota, error) {
	batch.Queue(`select `+prefixedDocumentColumns+`, coalesce(q.max_bytes, $2), coalesce(q.max_documents, $3),
			coalesce(q.used_bytes, 0), coalesce(q.used_documents, 0)
		from documents d left join quotas q on q.user_id = d.user_id where d.id = $1`, id, def.Bytes, def.Documents)
	return func(br pgx.BatchResults) (Document, Quota, error) {
		var d Document
		var q Quota
		err := br.QueryRow().Scan(append(documentTargets(&d), &q.MaxBytes, &q.MaxDocuments, &q.UsedBytes, &q.UsedDocuments)...)
		if d.UserID != nil {
			q.UserID = *d.UserID
		}
		return d, q, translate(err)
	}
}

// DocumentAndQuota is a document with its owner's effective quota.
type DocumentAndQuota struct {
	Document Document
	Quota    Quota
}

// QueueGetDocumentsAndQuotas adds to batch the read of the documents ids
// that exist, each with its owner's effective quota (as
// QueueGetDocumentAndQuota); the returned function reads them, by id, in
// queue order.
func QueueGetDocumentsAndQuotas(batch *pgx.Batch, ids []uuid.UUID, def QuotaLimits) func(pgx.BatchResults) (map[uuid.UUID]DocumentAndQuota, error) {
	batch.Queue(`select `+prefixedDocumentColumns+`, coalesce(q.max_bytes, $2), coalesce(q.max_documents, $3),
			coalesce(q.used_bytes, 0), coalesce(q.used_documents, 0)
		from documents d left join quotas q on q.user_id = d.user_id where d.id = any($1)`, ids, def.Bytes, def.Documents)
	return func(br pgx.BatchResults) (map[uuid.UUID]DocumentAndQuota, error) {
		rows, err := br.Query()
		if err != nil {
			return nil, translate(err)
		}
		defer rows.Close()
		found := make(map[uuid.UUID]DocumentAndQuota, len(ids))
		for rows.Next() {
			var dq DocumentAndQuota
			q := &dq.Quota
			if err := rows.Scan(append(documentTargets(&dq.Document), &q.MaxBytes, &q.MaxDocuments, &q.UsedBytes, &q.UsedDocuments)...); err != nil {
				return nil, translate(err)
			}
			if dq.Document.UserID != nil {
				q.UserID = *dq.Document.UserID
			}
			found[dq.Document.ID] = dq
		}
		return found, translate(rows.Err())
	}
}
