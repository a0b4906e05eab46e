package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
)

// Origin is where a change came from, for the audit log: the HTTP request
// (client IP, user agent, request id) or nothing for the pipeline.
type Origin struct {
	ClientIP  *netip.Addr
	UserAgent string
	RequestID string
}

// Record writes ev to the audit log and the outbox in tx, the transaction
// of the change it describes: either both commit with the change or
// neither does.
func Record(ctx context.Context, tx pgx.Tx, ev events.Envelope, origin Origin) error {
	batch := &pgx.Batch{}
	if err := queueRecord(batch, ev, origin); err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("record %s: %w", ev.Type, translate(err))
	}
	return nil
}

// queueRecord adds the audit row and the outbox row of ev to batch.
func queueRecord(batch *pgx.Batch, ev events.Envelope, origin Origin) error {
	payload, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	var ip any
	if origin.ClientIP != nil {
		ip = origin.ClientIP.String()
	}
	batch.Queue(`insert into audit_log (occurred_at, actor_type, actor_id, action, aggregate_type, aggregate_id,
			event_id, correlation_id, client_ip, user_agent, request_id, details)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9::inet, nullif($10, ''), nullif($11, ''), $12)`,
		ev.OccurredAt, ev.Actor.Type, ev.Actor.ID, ev.Type, ev.AggregateType, ev.AggregateID,
		ev.ID, ev.CorrelationID, ip, truncate(origin.UserAgent, 1024), truncate(origin.RequestID, 200), ev.Data)
	batch.Queue(`insert into outbox (event_id, stream, event_type, aggregate_type, aggregate_id, correlation_id, payload, created_at)
		values ($1, $2, $3, $4, $5, $6, $7, $8)`,
		ev.ID, ev.Stream(), ev.Type, ev.AggregateType, ev.AggregateID, ev.CorrelationID, payload, ev.OccurredAt)
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut at a rune boundary.
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// OutboxRow is an event waiting to be published.
type OutboxRow struct {
	ID            int64
	EventID       uuid.UUID
	Stream        string
	EventType     string
	AggregateID   uuid.UUID
	CorrelationID *uuid.UUID
	Payload       []byte
	CreatedAt     time.Time
}

// ClaimOutbox locks up to limit unpublished rows, oldest id first, skipping
// rows another relay holds. It selects unpublished rows, never by id
// high-water mark, so a transaction that commits after one with a higher id
// is still published. The locks last as long as tx.
func ClaimOutbox(ctx context.Context, tx pgx.Tx, limit int) ([]OutboxRow, error) {
	rows, err := tx.Query(ctx, `select id, event_id, stream, event_type, aggregate_id, correlation_id, payload::text, created_at
		from outbox where published_at is null
		order by id limit $1 for update skip locked`, limit)
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (OutboxRow, error) {
		var r OutboxRow
		var payload string
		err := row.Scan(&r.ID, &r.EventID, &r.Stream, &r.EventType, &r.AggregateID, &r.CorrelationID, &payload, &r.CreatedAt)
		r.Payload = []byte(payload)
		return r, err
	})
	return out, translate(err)
}

// MarkPublished marks the rows with ids as published, in one statement.
func MarkPublished(ctx context.Context, tx pgx.Tx, ids []int64) error {
	_, err := tx.Exec(ctx, `update outbox set published_at = now(), attempts = attempts + 1 where id = any($1)`, ids)
	return translate(err)
}

// RepublishStuckUploads makes the document.uploaded event of every document
// still pending after olderThan unpublished again, so the relay sends it
// once more: a lost stream entry (Redis restarted empty, a trimmed stream,
// a dead-lettered delivery) cannot strand an upload. It returns how many
// events it re-queued.
func RepublishStuckUploads(ctx context.Context, db DBTX, olderThan time.Duration) (int64, error) {
	tag, err := db.Exec(ctx, `update outbox o set published_at = null
		from documents d
		where d.status = 'pending' and d.created_at < now() - $1::interval
		  and o.aggregate_id = d.id and o.event_type = 'document.uploaded'
		  and o.published_at is not null and o.published_at < now() - $1::interval`,
		olderThan)
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}
