package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
)

// AuditFilter selects audit rows. Zero fields select everything.
type AuditFilter struct {
	Since time.Time // occurred_at >= Since
	Until time.Time // occurred_at < Until
	// AggregateID is the document (or topic, folder, connection) the
	// events are about.
	AggregateID   *uuid.UUID
	Type          string // the event type (audit_log.action)
	ActorType     string // anonymous, user or system
	ActorID       *uuid.UUID
	CorrelationID *uuid.UUID
	// Scope, when set, keeps only the rows about resources in it (see
	// auditInScope); nil keeps every row (replay, administrators).
	Scope *Scope
}

// auditInScope is the SQL condition that an audit row is about a resource
// of the owner in parameter n (a non-nil owner), whoever acted:
//   - document events (cloud_sync.* included, whose aggregate is the
//     document): the document's owner. Documents are never removed, only
//     marked deleted, so their rows stay visible to their owner.
//   - user events: the user's own account (aggregate_id).
//   - any other aggregate (topic, folder, cloud_connection): the user_id
//     its event data carries, the owner when the event happened; rows
//     whose data has none are nobody's.
//
// audit_log.owner_id holds that owner, set by a trigger as each row is
// written (migration 014), so the rows of one owner are read from
// audit_log_owner_idx in id order.
//
// Acting is not enough: a row about another owner's resource stays theirs
// (only administrators act on other owners' resources, and they see
// every row while they are administrators).
func auditInScope(n int) string {
	return "owner_id = $" + strconv.Itoa(n) + "::uuid"
}

// AuditEvent is an event rebuilt from its audit row. Seq is the row's id:
// the order rows were written in, and the keyset of AuditEvents.
// RequestID and Traceparent are the row's ("" when it has none): they
// travel in stream metadata, not in the envelope.
type AuditEvent struct {
	Seq         int64
	Event       events.Envelope
	RequestID   string
	Traceparent string
}

// AuditEvents returns up to limit events of the audit log that match f and
// whose row id is above after, in row id order. Each is rebuilt from its
// row as RequeueStuckUploads does: the original event id and version,
// occurred_at in UTC, the details as data. Rows without an
// event id (written before events had one) are skipped. Pass the Seq of the
// last event as after to read the next batch.
func AuditEvents(ctx context.Context, db DBTX, f AuditFilter, after int64, limit int) ([]AuditEvent, error) {
	// Only the conditions in use are in the statement, so the planner sees
	// plain range and equality conditions it can serve from
	// audit_log_occurred_idx or audit_log_aggregate_idx.
	where := []string{"id > $1", "event_id is not null"}
	args := []any{after}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if !f.Since.IsZero() {
		add("occurred_at >= ?", f.Since)
	}
	if !f.Until.IsZero() {
		add("occurred_at < ?", f.Until)
	}
	if f.AggregateID != nil {
		add("aggregate_id = ?", *f.AggregateID)
	}
	if f.Type != "" {
		add("action = ?", f.Type)
	}
	if f.ActorType != "" {
		add("actor_type = ?", f.ActorType)
	}
	if f.ActorID != nil {
		add("actor_id = ?", *f.ActorID)
	}
	if f.CorrelationID != nil {
		add("correlation_id = ?", *f.CorrelationID)
	}
	switch {
	case f.Scope == nil || f.Scope.All():
	case f.Scope.Owner() == nil:
		where = append(where, "false") // holds no row
	default:
		args = append(args, *f.Scope.Owner())
		where = append(where, auditInScope(len(args)))
	}
	args = append(args, limit)
	rows, err := db.Query(ctx, `select id, action, occurred_at, actor_type, actor_id, aggregate_type, aggregate_id,
			event_id, correlation_id, causation_id, details::text, version,
			coalesce(request_id, ''), coalesce(traceparent, '')
		from audit_log where `+strings.Join(where, " and ")+`
		order by id limit $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEvent, error) {
		var a AuditEvent
		var e auditEnvelope
		err := row.Scan(append(append([]any{&a.Seq, &e.Type}, e.targets()...), &a.RequestID, &a.Traceparent)...)
		a.Event = e.envelope()
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", translate(err))
	}
	return out, nil
}

// auditEnvelope scans the columns of an audit row that make its event's
// envelope: occurred_at, actor_type, actor_id, aggregate_type,
// aggregate_id, event_id, correlation_id, causation_id, details::text,
// version (targets, in that order).
type auditEnvelope struct {
	events.Envelope
	corr    *uuid.UUID
	data    string
	version int16
}

func (e *auditEnvelope) targets() []any {
	return []any{&e.OccurredAt, &e.Actor.Type, &e.Actor.ID, &e.AggregateType, &e.AggregateID,
		&e.ID, &e.corr, &e.CausationID, &e.data, &e.version}
}

// envelope is the event as it was written.
func (e *auditEnvelope) envelope() events.Envelope {
	ev := e.Envelope
	ev.Version = int(e.version)
	ev.OccurredAt = ev.OccurredAt.UTC()
	if e.corr != nil {
		ev.CorrelationID = *e.corr
	}
	ev.Data = json.RawMessage(e.data)
	return ev
}

// UnhandledEvent is a recorded event a consumer has not handled, rebuilt
// from its audit row, with the origin it was written in.
type UnhandledEvent struct {
	Event  events.Envelope
	Origin Origin
}

// UnhandledEvents returns up to limit events of the given types recorded
// between since and before that consumer has no processed_events mark for,
// oldest first: events whose stream entry was lost (Redis restarted
// without its data) or never delivered, for the consumer to handle from
// the audit log instead.
func UnhandledEvents(ctx context.Context, db DBTX, consumer string, types []string, since, before time.Time, limit int) ([]UnhandledEvent, error) {
	rows, err := db.Query(ctx, `select a.action, a.occurred_at, a.actor_type, a.actor_id, a.aggregate_type, a.aggregate_id,
			a.event_id, a.correlation_id, a.causation_id, a.details::text, a.version,
			coalesce(a.request_id, ''), coalesce(a.traceparent, '')
		from audit_log a
		where a.occurred_at >= $3 and a.occurred_at < $4 and a.action = any($2) and a.event_id is not null
		  and not exists (select 1 from processed_events p where p.consumer = $1 and p.event_id = a.event_id)
		order by a.occurred_at, a.id limit $5`, consumer, types, since, before, limit)
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (UnhandledEvent, error) {
		var u UnhandledEvent
		var e auditEnvelope
		err := row.Scan(append(append([]any{&e.Type}, e.targets()...), &u.Origin.RequestID, &u.Origin.Traceparent)...)
		u.Event = e.envelope()
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("read unhandled events: %w", translate(err))
	}
	return out, nil
}
