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
