package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The audit chain (migration 010) makes changes to audit_log evident: link
// n holds SHA-256(hash of link n-1 || canonical content of one audit row),
// link 1 chains from 32 zero bytes. Links are appended in the order the
// chainer sees rows commit, not in row id order, so no writer waits on the
// chain head.

// ChainLink is one link of the audit chain.
type ChainLink struct {
	Seq     int64
	AuditID int64
	Hash    [sha256.Size]byte
}

// AuditRecord is an audit_log row as the chain hashes it.
type AuditRecord struct {
	ID                                  int64
	OccurredAt                          time.Time
	ActorType                           string
	ActorID                             *uuid.UUID
	Action, AggregateType               string
	AggregateID                         uuid.UUID
	EventID, CorrelationID, CausationID *uuid.UUID
	ClientIP, UserAgent, RequestID      *string
	Details                             string // jsonb text, as PostgreSQL writes it
	Version                             int16
	Traceparent                         *string
}

// auditRecordColumns are the columns targets scans, prefixed with a.
const auditRecordColumns = `a.id, a.occurred_at, a.actor_type, a.actor_id, a.action, a.aggregate_type, a.aggregate_id,
	a.event_id, a.correlation_id, a.causation_id, host(a.client_ip), a.user_agent, a.request_id, a.details::text, a.version, a.traceparent`

// auditScan scans auditRecordColumns of an outer join: all null when
// there is no row.
type auditScan struct {
	r                                   AuditRecord
	id                                  *int64
	occurred                            *time.Time
	actorType, action, aggType, details *string
	aggID                               *uuid.UUID
	version                             *int16
}

func (s *auditScan) targets() []any {
	return []any{&s.id, &s.occurred, &s.actorType, &s.r.ActorID, &s.action, &s.aggType, &s.aggID,
		&s.r.EventID, &s.r.CorrelationID, &s.r.CausationID, &s.r.ClientIP, &s.r.UserAgent, &s.r.RequestID, &s.details, &s.version, &s.r.Traceparent}
}

// record is the scanned row, nil when there was none.
func (s *auditScan) record() *AuditRecord {
	if s.id == nil {
		return nil
	}
	r := s.r
	r.ID, r.OccurredAt, r.ActorType, r.Action, r.AggregateType = *s.id, *s.occurred, *s.actorType, *s.action, *s.aggType
	r.AggregateID, r.Details, r.Version = *s.aggID, *s.details, *s.version
	return &r
}

// chainFormat names the canonical encoding; a change to it needs a new name.
const chainFormat = "docuvault.audit_chain.v1"

// Canonical is the row's content as the chain hashes it: a JSON array of
// the format name and every column in table order, times in UTC with
// microseconds, absent values null, the details as PostgreSQL's jsonb text.
func (r AuditRecord) Canonical() []byte {
	uuidOrNil := func(id *uuid.UUID) any {
		if id == nil {
			return nil
		}
		return id.String()
	}
	b, err := json.Marshal([]any{chainFormat, r.ID, r.OccurredAt.UTC().Format("2006-01-02T15:04:05.000000Z"),
		r.ActorType, uuidOrNil(r.ActorID), r.Action, r.AggregateType, r.AggregateID.String(),
		uuidOrNil(r.EventID), uuidOrNil(r.CorrelationID), uuidOrNil(r.CausationID),
		r.ClientIP, r.UserAgent, r.RequestID, r.Details, r.Version, r.Traceparent})
	if err != nil {
		panic(err) // strings, numbers and nulls always encode
	}
	return b
}

// ChainHash is the hash of the link after one whose hash is prev, for row r.
func ChainHash(prev [sha256.Size]byte, r AuditRecord) [sha256.Size]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(r.Canonical())
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// ChainHead returns the last link of the chain (Seq 0 and a zero hash when
// the chain is empty).
func ChainHead(ctx context.Context, db DBTX) (ChainLink, error) {
	var l ChainLink
	var hash []byte
	err := db.QueryRow(ctx, `select seq, audit_id, hash from audit_chain order by seq desc limit 1`).Scan(&l.Seq, &l.AuditID, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return ChainLink{}, nil
	}
	if err != nil {
		return l, translate(err)
	}
	copy(l.Hash[:], hash)
	return l, nil
}

// UnchainedAudit returns up to limit audit rows with ids above after that
// are not in the chain yet, in id order, and the xmin of the statement's
// snapshot (the oldest transaction then running).
func UnchainedAudit(ctx context.Context, db DBTX, after int64, limit int) ([]AuditRecord, uint64, error) {
	rows, err := db.Query(ctx, `select pg_snapshot_xmin(pg_current_snapshot())::text, `+auditRecordColumns+`
		from (select 1) as one left join lateral (
			select * from audit_log a where a.id > $1
			  and not exists (select 1 from audit_chain c where c.audit_id = a.id)
			order by a.id limit $2) as a on true`, after, limit)
	if err != nil {
		return nil, 0, translate(err)
	}
	defer rows.Close()
	var out []AuditRecord
	var xminText string
	for rows.Next() {
		var s auditScan
		if err := rows.Scan(append([]any{&xminText}, s.targets()...)...); err != nil {
			return nil, 0, translate(err)
		}
		if r := s.record(); r != nil { // else no row: the snapshot's xmin alone
			out = append(out, *r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, translate(err)
	}
	xmin, err := strconv.ParseUint(xminText, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot xmin %q: %w", xminText, err)
	}
	return out, xmin, nil
}

// AppendChain inserts links in tx and returns tx's transaction id (which
// it assigns if tx had none, so it is newer than any earlier snapshot of
// tx's).
func AppendChain(ctx context.Context, tx pgx.Tx, links []ChainLink) (uint64, error) {
	seqs := make([]int64, len(links))
	ids := make([]int64, len(links))
	hashes := make([][]byte, len(links))
	for i, l := range links {
		seqs[i], ids[i], hashes[i] = l.Seq, l.AuditID, l.Hash[:]
	}
	var xidText string
	err := tx.QueryRow(ctx, `with linked as (
			insert into audit_chain (seq, audit_id, hash)
			select * from unnest($1::bigint[], $2::bigint[], $3::bytea[]))
		select pg_current_xact_id()::text`, seqs, ids, hashes).Scan(&xidText)
	if err != nil {
		return 0, fmt.Errorf("append %d audit chain links: %w", len(links), translate(err))
	}
	xid, err := strconv.ParseUint(xidText, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("transaction id %q: %w", xidText, err)
	}
	return xid, nil
}

// ChainEntry is a link as verification reads it: the link and its audit
// row (Row nil when the row is gone).
type ChainEntry struct {
	ChainLink
	Row *AuditRecord
}

// ChainEntries returns up to limit links from seq from on, in seq order,
// each with its audit row.
func ChainEntries(ctx context.Context, db DBTX, from int64, limit int) ([]ChainEntry, error) {
	rows, err := db.Query(ctx, `select c.seq, c.audit_id, c.hash, `+auditRecordColumns+`
		from audit_chain c left join audit_log a on a.id = c.audit_id
		where c.seq >= $1 order by c.seq limit $2`, from, limit)
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	var out []ChainEntry
	for rows.Next() {
		var e ChainEntry
		var hash []byte
		var s auditScan
		if err := rows.Scan(append([]any{&e.Seq, &e.AuditID, &hash}, s.targets()...)...); err != nil {
			return nil, translate(err)
		}
		copy(e.Hash[:], hash)
		e.Row = s.record()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(err)
	}
	return out, nil
}

// ChainLinkAt returns link seq (found false when there is none).
func ChainLinkAt(ctx context.Context, db DBTX, seq int64) (ChainLink, bool, error) {
	l := ChainLink{Seq: seq}
	var hash []byte
	err := db.QueryRow(ctx, `select audit_id, hash from audit_chain where seq = $1`, seq).Scan(&l.AuditID, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return l, false, nil
	}
	if err != nil {
		return l, false, translate(err)
	}
	copy(l.Hash[:], hash)
	return l, true, nil
}

// ChainStartAt returns the seq of the link of the first audit row that
// occurred at or after since (0 when there is none yet).
func ChainStartAt(ctx context.Context, db DBTX, since time.Time) (int64, error) {
	var seq *int64
	err := db.QueryRow(ctx, `select (select c.seq from audit_chain c where c.audit_id >= a.id order by c.audit_id limit 1)
		from audit_log a where a.occurred_at >= $1 order by a.occurred_at, a.id limit 1`, since).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && seq == nil) {
		return 0, nil
	}
	if err != nil {
		return 0, translate(err)
	}
	return *seq, nil
}

// UnchainedBefore returns the lowest id above after of an audit row that
// is not in the chain although the chain holds a higher row id and the row
// occurred before olderThan: a row slipped in below the chain's head.
func UnchainedBefore(ctx context.Context, db DBTX, after int64, olderThan time.Time) (int64, bool, error) {
	var id int64
	err := db.QueryRow(ctx, `select a.id from audit_log a
		where a.id > $1 and a.id < (select coalesce(max(audit_id), 0) from audit_chain) and a.occurred_at < $2
		  and not exists (select 1 from audit_chain c where c.audit_id = a.id)
		order by a.id limit 1`, after, olderThan).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, translate(err)
	}
	return id, true, nil
}
