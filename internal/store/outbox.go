package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
)

// Origin is where a change came from, for the audit log and the outbox:
// the HTTP request (client IP, user agent, request id) or nothing for the
// pipeline, and the trace of the span that wrote the event. A consumer's
// events keep the request id of the request that caused them.
type Origin struct {
	ClientIP  *netip.Addr
	UserAgent string
	RequestID string
	// Traceparent is the W3C traceparent of the span that wrote the event
	// (internal/tracing; version 00 only), or "".
	Traceparent string
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

// recordBatch is how many events RecordAll sends in one batch (two
// statements each).
const recordBatch = 500

// RecordAll is Record for several events of one change, in order (their
// outbox ids follow it). It sends them in batches of a few hundred, so
// that a change with very many events (a topic deleted with the
// document.updated of each of its documents) takes few round trips and
// bounded memory beyond the events themselves.
func RecordAll(ctx context.Context, tx pgx.Tx, evs []events.Envelope, origin Origin) error {
	for len(evs) > 0 {
		n := min(len(evs), recordBatch)
		batch := &pgx.Batch{}
		for _, ev := range evs[:n] {
			if err := queueRecord(batch, ev, origin); err != nil {
				return err
			}
		}
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("record %d events (%s first): %w", n, evs[0].Type, translate(err))
		}
		evs = evs[n:]
	}
	return nil
}

// queueRecord adds the audit row and the outbox row of ev to batch.
func queueRecord(batch *pgx.Batch, ev events.Envelope, origin Origin) error {
	payload, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	batch.Queue(`insert into audit_log (occurred_at, actor_type, actor_id, action, aggregate_type, aggregate_id,
			event_id, correlation_id, causation_id, client_ip, user_agent, request_id, details, version, traceparent)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::inet, nullif($11, ''), nullif($12, ''), $13, $14, nullif($15, ''))`,
		ev.OccurredAt, ev.Actor.Type, ev.Actor.ID, ev.Type, ev.AggregateType, ev.AggregateID,
		ev.ID, ev.CorrelationID, ev.CausationID, origin.ip(), truncate(origin.UserAgent, 1024), truncate(origin.RequestID, 200), ev.Data, ev.Version,
		origin.Traceparent)
	queueOutbox(batch, ev, payload, origin)
	return nil
}

// FinishAndRecord is a consumer's whole effect on a pending document in
// one statement (one round trip, its own transaction): it records eventID
// as handled by consumer, moves document id from pending to status (with
// finalKey as its storage key unless empty, and reason), and writes the
// audit row and outbox row of out (with origin's request id and
// traceparent). If the event was handled before, or the document is no
// longer pending, it changes nothing but the handled mark and reports
// false.
func FinishAndRecord(ctx context.Context, db DBTX, consumer string, eventID, id uuid.UUID, status, finalKey string, reason *string, out events.Envelope, origin Origin) (bool, error) {
	payload, err := json.Marshal(out)
	if err != nil {
		return false, fmt.Errorf("encode event: %w", err)
	}
	var n int
	err = db.QueryRow(ctx, `with handled as (
			insert into processed_events (consumer, event_id) values ($1, $2) on conflict do nothing returning event_id),
		doc as (
			update documents set status = $4, storage_key = coalesce(nullif($5, ''), storage_key), reject_reason = $6,
				finalized_at = now(), updated_at = now()
			where id = $3 and status = 'pending' and exists (select 1 from handled)
			returning id),
		`+recordFromDoc(7)+`
		select count(*) from doc`,
		append([]any{consumer, eventID, id, status, finalKey, reason}, recordArgs(out, payload, origin)...)...).Scan(&n)
	if err != nil {
		return false, translate(err)
	}
	return n == 1, nil
}

// recordFromDoc is the two CTEs, audit and queued, of a statement that
// writes the audit row and outbox row of an event for each row of its CTE
// doc (one: the document it changed; none: it changed nothing). Their
// parameters are the 15 of recordArgs, numbered from first.
func recordFromDoc(first int) string {
	p := func(i int) string { return "$" + strconv.Itoa(first+i) }
	return `audit as (
			insert into audit_log (occurred_at, actor_type, actor_id, action, aggregate_type, aggregate_id,
				event_id, correlation_id, causation_id, details, version, request_id, traceparent)
			select ` + strings.Join([]string{p(0), p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8), p(9), p(12)}, ", ") +
		`, nullif(` + p(13) + `, ''), nullif(` + p(14) + `, '') from doc),
		queued as (
			insert into outbox (event_id, stream, event_type, aggregate_type, aggregate_id, correlation_id, payload, created_at, version,
				request_id, traceparent)
			select ` + strings.Join([]string{p(6), p(10), p(3), p(4), p(5), p(7), p(11), p(0), p(12)}, ", ") +
		`, nullif(` + p(13) + `, ''), nullif(` + p(14) + `, '') from doc)`
}

// recordArgs are the parameters of recordFromDoc for out, encoded as
// payload, written from origin.
func recordArgs(out events.Envelope, payload []byte, origin Origin) []any {
	return []any{out.OccurredAt, out.Actor.Type, out.Actor.ID, out.Type, out.AggregateType, out.AggregateID,
		out.ID, out.CorrelationID, out.CausationID, out.Data, out.Stream(), string(payload), out.Version,
		truncate(origin.RequestID, 200), origin.Traceparent}
}

// queueOutbox adds the outbox row of ev (encoded as payload, from origin)
// to batch.
func queueOutbox(batch *pgx.Batch, ev events.Envelope, payload []byte, origin Origin) {
	batch.Queue(`insert into outbox (event_id, stream, event_type, aggregate_type, aggregate_id, correlation_id, payload, created_at, version,
			client_ip, user_agent, request_id, traceparent)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::inet, nullif($11, ''), nullif($12, ''), nullif($13, ''))`,
		ev.ID, ev.Stream(), ev.Type, ev.AggregateType, ev.AggregateID, ev.CorrelationID, string(payload), ev.OccurredAt, ev.Version,
		origin.ip(), truncate(origin.UserAgent, 1024), truncate(origin.RequestID, 200), origin.Traceparent)
}

// ip is the client IP as an inet parameter (nil when unknown).
func (o Origin) ip() any {
	if o.ClientIP == nil {
		return nil
	}
	return o.ClientIP.String()
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
	Version       int // of the envelope
	// Where the change came from, as its audit row has it ("" when not an
	// HTTP request; a consumer's events have the request id of their
	// cause's), and the traceparent of the span that wrote it ("" when
	// unknown).
	ClientIP, UserAgent, RequestID, Traceparent string
}

// TakeOutbox deletes up to limit rows with ids above after from the
// outbox, oldest id first, skipping rows another transaction holds, and
// returns them in id order. The rows are gone only if tx commits: the
// relay commits after Redis accepted them, and a rollback (or a crash)
// puts them back.
//
// It also returns the id of tx's own transaction (assigned by the
// statement, after its snapshot was taken) and the xmin of the statement's
// snapshot (the oldest transaction still running): relay.cursor uses them
// to choose an after that cannot skip a transaction committing late.
func TakeOutbox(ctx context.Context, tx pgx.Tx, after int64, limit int) (rows []OutboxRow, xid, xmin uint64, err error) {
	res, err := tx.Query(ctx, `with taken as (
			delete from outbox where id in (
				select id from outbox where id > $1 order by id limit $2 for update skip locked)
			returning id, event_id, stream, event_type, aggregate_id, correlation_id, payload::text, created_at, version,
				coalesce(host(client_ip), '') as client_ip, coalesce(user_agent, '') as user_agent, coalesce(request_id, '') as request_id,
				coalesce(traceparent, '') as traceparent)
		select pg_current_xact_id()::text, pg_snapshot_xmin(pg_current_snapshot())::text,
			t.id, t.event_id, t.stream, t.event_type, t.aggregate_id, t.correlation_id, t.payload, t.created_at, t.version,
			t.client_ip, t.user_agent, t.request_id, t.traceparent
		from (select 1) as one left join taken t on true`, after, limit)
	if err != nil {
		return nil, 0, 0, translate(err)
	}
	defer res.Close()
	var xidText, xminText string
	for res.Next() {
		var id *int64
		var r OutboxRow
		var eventID, aggregateID *uuid.UUID
		var stream, eventType, payload *string
		var createdAt *time.Time
		var version *int16
		var clientIP, userAgent, requestID, traceparent *string
		if err := res.Scan(&xidText, &xminText, &id, &eventID, &stream, &eventType, &aggregateID, &r.CorrelationID, &payload, &createdAt, &version,
			&clientIP, &userAgent, &requestID, &traceparent); err != nil {
			return nil, 0, 0, translate(err)
		}
		if id == nil {
			continue // nothing taken: the one row of ids alone
		}
		r.ID, r.EventID, r.Stream, r.EventType, r.AggregateID = *id, *eventID, *stream, *eventType, *aggregateID
		r.Payload, r.CreatedAt, r.Version = []byte(*payload), *createdAt, int(*version)
		r.ClientIP, r.UserAgent, r.RequestID, r.Traceparent = *clientIP, *userAgent, *requestID, *traceparent
		rows = append(rows, r)
	}
	if err := res.Err(); err != nil {
		return nil, 0, 0, translate(err)
	}
	// DELETE ... RETURNING gives no order.
	slices.SortFunc(rows, func(a, b OutboxRow) int { return cmp.Compare(a.ID, b.ID) })
	if xid, err = strconv.ParseUint(xidText, 10, 64); err != nil {
		return nil, 0, 0, fmt.Errorf("transaction id %q: %w", xidText, err)
	}
	if xmin, err = strconv.ParseUint(xminText, 10, 64); err != nil {
		return nil, 0, 0, fmt.Errorf("snapshot xmin %q: %w", xminText, err)
	}
	return rows, xid, xmin, nil
}

// OutboxBacklog returns how many rows wait in the outbox and when the oldest
// was written (zero when it is empty).
func OutboxBacklog(ctx context.Context, db DBTX) (int64, time.Time, error) {
	var n int64
	var oldest *time.Time
	err := db.QueryRow(ctx, `select count(*), min(created_at) from outbox`).Scan(&n, &oldest)
	if err != nil || oldest == nil {
		return n, time.Time{}, translate(err)
	}
	return n, *oldest, nil
}

// RequeueStuckUploads puts the document.uploaded event of every document
// still pending after olderThan back in the outbox, rebuilt from its audit
// row with its original id and origin (request id and traceparent
// included), so the relay sends it once more: a lost stream entry (Redis
// restarted empty, a trimmed stream, a dead-lettered delivery) cannot
// strand an upload. A document is re-queued at most once per
// olderThan, and not while its event still waits in the outbox. It returns
// how many events it re-queued.
func RequeueStuckUploads(ctx context.Context, db Beginner, olderThan time.Duration, limit int) (int, error) {
	n := 0
	err := WithTx(ctx, db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `with stuck as (
				update documents d set requeued_at = now()
				where d.id in (select id from documents
					where status = 'pending' and created_at < now() - $1::interval
					  and (requeued_at is null or requeued_at < now() - $1::interval)
					order by created_at limit $2 for update skip locked)
				returning d.id)
			select a.occurred_at, a.actor_type, a.actor_id, a.aggregate_type, a.aggregate_id,
				a.event_id, a.correlation_id, a.causation_id, a.details::text, a.version,
				host(a.client_ip), coalesce(a.user_agent, ''), coalesce(a.request_id, ''), coalesce(a.traceparent, '')
			from stuck join audit_log a on a.aggregate_id = stuck.id and a.action = $3
			where a.event_id is not null
			  and not exists (select 1 from outbox o where o.event_id = a.event_id)`,
			olderThan, limit, events.DocumentUploaded)
		if err != nil {
			return err
		}
		type stuck struct {
			ev     events.Envelope
			origin Origin
		}
		evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (stuck, error) {
			e := auditEnvelope{Envelope: events.Envelope{Type: events.DocumentUploaded}}
			var s stuck
			var ip *string
			err := row.Scan(append(e.targets(), &ip, &s.origin.UserAgent, &s.origin.RequestID, &s.origin.Traceparent)...)
			if ip != nil {
				if a, perr := netip.ParseAddr(*ip); perr == nil {
					s.origin.ClientIP = &a
				}
			}
			s.ev = e.envelope()
			return s, err
		})
		if err != nil {
			return err
		}
		batch := &pgx.Batch{}
		for _, s := range evs {
			payload, err := json.Marshal(s.ev)
			if err != nil {
				return fmt.Errorf("encode event: %w", err)
			}
			queueOutbox(batch, s.ev, payload, s.origin)
		}
		n = len(evs)
		return tx.SendBatch(ctx, batch).Close()
	})
	return n, translate(err)
}

// ChargedOutcome is what FinishChargedAndRecord did.
type ChargedOutcome int

const (
	// Charged: the document is ready, the owner's quota charged, the
	// event handled and recorded.
	Charged ChargedOutcome = iota
	// ChargeNotApplied: nothing changed: the event was handled before,
	// or the document is no longer pending, or no longer as expected (its
	// topic or folder changed): read it again to tell.
	ChargeNotApplied
	// ChargeRefused: the document does not fit the owner's quota; nothing
	// changed.
	ChargeRefused
	// ChargeNoRow: the owner has no quotas row yet (EnsureQuotaRow, then
	// again); nothing changed.
	ChargeNoRow
)

// FinishChargedAndRecord is FinishAndRecord for a document that becomes
// ready and has an owner, whose quota it charges, all in one statement
// (one round trip, no transaction held open): it locks the owner's quotas
// row only if the document still fits (rechecked on the row's latest
// version), then marks the document, still pending and as expected
// (topic and folder, which out carries), ready at finalKey, the event
// handled, charges the quota and writes the audit and outbox rows of out.
// If any step does not apply, nothing changes. The quota row's lock is
// taken first and held to the commit, so concurrent finalisations of one
// owner's documents never take it over its limits. Deliveries of one
// document are serialised by the caller (its advisory lock), so the
// handled check on the statement's snapshot is current.
func FinishChargedAndRecord(ctx context.Context, db DBTX, consumer string, eventID uuid.UUID, doc Document, finalKey string,
	def QuotaLimits, out events.Envelope, origin Origin) (ChargedOutcome, error) {
	sql, args, err := finishChargedStatement(consumer, eventID, doc, finalKey, def, out, origin)
	if err != nil {
		return 0, err
	}
	return scanCharged(db.QueryRow(ctx, sql, args...))
}

// finishChargedStatement is the statement of FinishChargedAndRecord and
// its arguments.
func finishChargedStatement(consumer string, eventID uuid.UUID, doc Document, finalKey string,
	def QuotaLimits, out events.Envelope, origin Origin) (string, []any, error) {
	if doc.UserID == nil {
		return "", nil, errors.New("finish charged: the document has no owner")
	}
	payload, err := json.Marshal(out)
	if err != nil {
		return "", nil, fmt.Errorf("encode event: %w", err)
	}
	return `with fits as (
			select user_id from quotas where user_id = $20
				and used_bytes + $21 <= coalesce(max_bytes, $22) and used_documents + 1 <= coalesce(max_documents, $23)
			for update),
		doc as (
			update documents set status = 'ready', storage_key = $4, reject_reason = null, finalized_at = now(), updated_at = now()
			where id = $3 and status = 'pending' and topic_id is not distinct from $24 and folder_id is not distinct from $25
				and exists (select 1 from fits)
				and not exists (select 1 from processed_events where consumer = $1 and event_id = $2)
			returning id),
		handled as (
			insert into processed_events (consumer, event_id) select $1, $2 from doc),
		charged as (
			update quotas set used_bytes = used_bytes + $21, used_documents = used_documents + 1, updated_at = now()
			where user_id = $20 and exists (select 1 from doc)
			returning user_id),
		` + recordFromDoc(5) + `
		select (select count(*) from charged), (select count(*) from fits), exists (select 1 from quotas where user_id = $20)`,
		append(append([]any{consumer, eventID, doc.ID, finalKey}, recordArgs(out, payload, origin)...),
			*doc.UserID, doc.SizeBytes, def.Bytes, def.Documents, doc.TopicID, doc.FolderID), nil
}

// scanCharged reads the outcome of finishChargedStatement.
func scanCharged(row pgx.Row) (ChargedOutcome, error) {
	var done, fits int
	var hasRow bool
	err := row.Scan(&done, &fits, &hasRow)
	switch {
	case err != nil:
		return 0, translate(err)
	case done == 1:
		return Charged, nil
	case fits == 1:
		return ChargeNotApplied, nil
	case !hasRow:
		return ChargeNoRow, nil
	}
	return ChargeRefused, nil
}

// EnsureQuotaRow makes user's quotas row (default limits, nothing used)
// unless it exists.
func EnsureQuotaRow(ctx context.Context, db DBTX, user uuid.UUID) error {
	_, err := db.Exec(ctx, `insert into quotas (user_id) values ($1) on conflict (user_id) do nothing`, user)
	return translate(err)
}

// ChargedFinish is one document of QueueFinishChargedMany: the pending
// document (as read, with its owner), its final key, the event handled
// and the finalized event out with its origin.
type ChargedFinish struct {
	EventID  uuid.UUID
	Doc      Document
	FinalKey string
	Out      events.Envelope
	Origin   Origin
}

// QueueFinishChargedMany adds to batch one statement that does what
// FinishChargedAndRecord does for each of items, applying those of an
// owner only if all of that owner's fit its quota (checked on the quotas
// rows' latest versions, locked in owner order until the commit): it
// marks each document still pending and as expected ready at its final
// key, records its event as handled, charges each owner once for its
// documents, and writes their audit and outbox rows. The returned
// function reads which documents it applied, in queue order; the others
// (handled before, no longer pending or as expected, an owner without a
// quotas row or without room for all of them) changed nothing.
func QueueFinishChargedMany(batch *pgx.Batch, consumer string, items []ChargedFinish, def QuotaLimits) (func(pgx.BatchResults) (map[uuid.UUID]bool, error), error) {
	// One array per column of the statement's input.
	var c struct {
		docIDs, eventIDs, owners, outIDs, correlations []uuid.UUID
		topics, folders, actorIDs, causations          []*uuid.UUID
		keys, actorTypes, actions, aggTypes, details   []string
		streams, payloads, requestIDs, traceparents    []string
		sizes                                          []int64
		versions                                       []int32
		occurred                                       []time.Time
	}
	for _, it := range items {
		if it.Doc.UserID == nil {
			return nil, errors.New("finish charged: a document has no owner")
		}
		payload, err := json.Marshal(it.Out)
		if err != nil {
			return nil, fmt.Errorf("encode event: %w", err)
		}
		d, o := it.Doc, it.Out
		c.docIDs, c.eventIDs, c.owners = append(c.docIDs, d.ID), append(c.eventIDs, it.EventID), append(c.owners, *d.UserID)
		c.topics, c.folders = append(c.topics, d.TopicID), append(c.folders, d.FolderID)
		c.keys, c.sizes = append(c.keys, it.FinalKey), append(c.sizes, d.SizeBytes)
		c.occurred, c.actorTypes, c.actorIDs = append(c.occurred, o.OccurredAt), append(c.actorTypes, o.Actor.Type), append(c.actorIDs, o.Actor.ID)
		c.actions, c.aggTypes, c.outIDs = append(c.actions, o.Type), append(c.aggTypes, o.AggregateType), append(c.outIDs, o.ID)
		c.correlations, c.causations = append(c.correlations, o.CorrelationID), append(c.causations, o.CausationID)
		c.details, c.streams, c.payloads = append(c.details, string(o.Data)), append(c.streams, o.Stream()), append(c.payloads, string(payload))
		c.versions = append(c.versions, int32(o.Version))
		c.requestIDs, c.traceparents = append(c.requestIDs, truncate(it.Origin.RequestID, 200)), append(c.traceparents, it.Origin.Traceparent)
	}
	batch.Queue(`with input as (
			select * from unnest($2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::bigint[], $7::uuid[], $8::uuid[],
				$9::timestamptz[], $10::text[], $11::uuid[], $12::text[], $13::text[], $14::uuid[], $15::uuid[], $16::uuid[],
				$17::text[], $18::text[], $19::text[], $20::int[], $21::text[], $22::text[])
				as i (doc_id, event_id, final_key, user_id, size, topic_id, folder_id,
					occurred_at, actor_type, actor_id, action, aggregate_type, out_id, correlation_id, causation_id,
					details, stream, payload, version, request_id, traceparent)),
		need as (
			select user_id, sum(size) as bytes, count(*) as docs from input group by user_id),
		fits as (
			select q.user_id from quotas q join need n on n.user_id = q.user_id
			where q.used_bytes + n.bytes <= coalesce(q.max_bytes, $23::bigint) and q.used_documents + n.docs <= coalesce(q.max_documents, $24::bigint)
			order by q.user_id
			for update of q),
		doc as (
			update documents d set status = 'ready', storage_key = i.final_key, reject_reason = null, finalized_at = now(), updated_at = now()
			from input i
			where d.id = i.doc_id and d.user_id = i.user_id and d.status = 'pending'
				and d.topic_id is not distinct from i.topic_id and d.folder_id is not distinct from i.folder_id
				and i.user_id in (select user_id from fits)
				and not exists (select 1 from processed_events p where p.consumer = $1 and p.event_id = i.event_id)
			returning i.*),
		handled as (
			insert into processed_events (consumer, event_id) select $1, event_id from doc),
		charged as (
			update quotas q set used_bytes = q.used_bytes + s.bytes, used_documents = q.used_documents + s.docs, updated_at = now()
			from (select user_id, sum(size) as bytes, count(*) as docs from doc group by user_id) s
			where q.user_id = s.user_id),
		audit as (
			insert into audit_log (occurred_at, actor_type, actor_id, action, aggregate_type, aggregate_id,
				event_id, correlation_id, causation_id, details, version, request_id, traceparent)
			select occurred_at, actor_type, actor_id, action, aggregate_type, doc_id, out_id, correlation_id, causation_id,
				details::jsonb, version, nullif(request_id, ''), nullif(traceparent, '') from doc order by doc_id),
		queued as (
			insert into outbox (event_id, stream, event_type, aggregate_type, aggregate_id, correlation_id, payload, created_at, version,
				request_id, traceparent)
			select out_id, stream, action, aggregate_type, doc_id, correlation_id, payload::json, occurred_at, version,
				nullif(request_id, ''), nullif(traceparent, '') from doc order by doc_id)
		select doc_id from doc`,
		consumer, c.docIDs, c.eventIDs, c.keys, c.owners, c.sizes, c.topics, c.folders,
		c.occurred, c.actorTypes, c.actorIDs, c.actions, c.aggTypes, c.outIDs, c.correlations, c.causations,
		c.details, c.streams, c.payloads, c.versions, c.requestIDs, c.traceparents, def.Bytes, def.Documents)
	return func(br pgx.BatchResults) (map[uuid.UUID]bool, error) {
		return collectIDSet(br.Query())
	}, nil
}
