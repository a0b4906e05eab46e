package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
)

// Cloud connection statuses. Paused connections hold their syncs; failing
// is set by the sync workers after a sync failed for good, and cleared by
// the next success.
const (
	ConnectionActive  = "active"
	ConnectionPaused  = "paused"
	ConnectionFailing = "failing"
)

// Cloud sync operations and statuses (see migrations/005_cloud_sync.sql).
const (
	SyncCopy   = "copy"
	SyncRemove = "remove"

	SyncPending = "pending"
	SyncSynced  = "synced"
	SyncFailed  = "failed"
	SyncRemoved = "removed"
)

// CloudConnection is a row of cloud_connections. Credentials is the sealed
// (encrypted) credentials blob, never the plaintext.
type CloudConnection struct {
	ID           uuid.UUID
	UserID       *uuid.UUID
	Provider     string
	Name         string
	Settings     json.RawMessage
	Credentials  []byte
	KeyVersion   int
	Status       string
	DeleteRemote bool
	LastError    *string
	LastSyncedAt *time.Time
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// EventData is the connection as events carry it: without credentials
// or last error.
func (c CloudConnection) EventData() events.CloudConnection {
	return events.CloudConnection{
		ID: c.ID, UserID: c.UserID, Provider: c.Provider, Name: c.Name, Settings: c.Settings,
		Status: c.Status, DeleteRemote: c.DeleteRemote,
	}
}

const cloudConnectionColumns = `id, user_id, provider, name, settings, credentials, key_version, status, delete_remote,
	last_error, last_synced_at, created_at, updated_at`

func scanCloudConnection(row pgx.Row) (CloudConnection, error) {
	var c CloudConnection
	var settings []byte
	err := row.Scan(&c.ID, &c.UserID, &c.Provider, &c.Name, &settings, &c.Credentials, &c.KeyVersion, &c.Status,
		&c.DeleteRemote, &c.LastError, &c.LastSyncedAt, &c.CreatedAt, &c.UpdatedAt)
	c.Settings = settings
	return c, translate(err)
}

func collectCloudConnections(rows pgx.Rows, err error) ([]CloudConnection, error) {
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CloudConnection, error) { return scanCloudConnection(r) })
	return out, translate(err)
}

// InsertCloudConnection creates a connection; ErrConflict when the owner
// has one of that name (case-insensitive).
func InsertCloudConnection(ctx context.Context, tx pgx.Tx, c CloudConnection) (CloudConnection, error) {
	return scanCloudConnection(tx.QueryRow(ctx, `insert into cloud_connections
			(id, user_id, provider, name, settings, credentials, key_version, status, delete_remote)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		returning `+cloudConnectionColumns,
		c.ID, c.UserID, c.Provider, c.Name, string(c.Settings), c.Credentials, c.KeyVersion, c.Status, c.DeleteRemote))
}

// GetCloudConnection returns the connection id if it is in scope, or
// ErrNotFound, also when it belongs to someone else.
func GetCloudConnection(ctx context.Context, db DBTX, scope Scope, id uuid.UUID) (CloudConnection, error) {
	return scanCloudConnection(db.QueryRow(ctx, `select `+cloudConnectionColumns+` from cloud_connections
		where id = $1 and `+scope.match("user_id", 2), id, scope.arg()))
}

// LockCloudConnection is GetCloudConnection that also locks the row until
// tx ends.
func LockCloudConnection(ctx context.Context, tx pgx.Tx, scope Scope, id uuid.UUID) (CloudConnection, error) {
	return scanCloudConnection(tx.QueryRow(ctx, `select `+cloudConnectionColumns+` from cloud_connections
		where id = $1 and `+scope.match("user_id", 2)+` for no key update`, id, scope.arg()))
}

// CloudConnectionByID returns connection id whoever owns it, locking it
// until tx ends (the sync workers' commits), or ErrNotFound.
func CloudConnectionByID(ctx context.Context, db DBTX, id uuid.UUID, lock bool) (CloudConnection, error) {
	q := `select ` + cloudConnectionColumns + ` from cloud_connections where id = $1`
	if lock {
		q += ` for no key update`
	}
	return scanCloudConnection(db.QueryRow(ctx, q, id))
}

// ListCloudConnections returns the connections in scope by id, after the
// keyset cursor.
func ListCloudConnections(ctx context.Context, db DBTX, scope Scope, after *uuid.UUID, limit int) ([]CloudConnection, error) {
	return collectCloudConnections(db.Query(ctx, `select `+cloudConnectionColumns+` from cloud_connections
		where `+scope.match("user_id", 1)+` and ($2::uuid is null or id > $2)
		order by id limit $3`, scope.arg(), after, limit))
}

// OwnerCloudConnections returns every connection of owner (nil: the
// unowned ones), whatever its status.
func OwnerCloudConnections(ctx context.Context, db DBTX, owner *uuid.UUID) ([]CloudConnection, error) {
	return collectCloudConnections(db.Query(ctx, `select `+cloudConnectionColumns+` from cloud_connections
		where user_id is not distinct from $1 order by id`, owner))
}

// UpdateCloudConnection writes the name, settings, credentials, status and
// delete_remote of c (found by id and owner); ErrNotFound or ErrConflict
// (name taken).
func UpdateCloudConnection(ctx context.Context, tx pgx.Tx, c CloudConnection) (CloudConnection, error) {
	return scanCloudConnection(tx.QueryRow(ctx, `update cloud_connections
		set name = $3, settings = $4, credentials = $5, key_version = $6, status = $7, delete_remote = $8,
		    last_error = case when $7 = 'failing' then last_error end, updated_at = now()
		where id = $1 and user_id is not distinct from $2
		returning `+cloudConnectionColumns,
		c.ID, c.UserID, c.Name, string(c.Settings), c.Credentials, c.KeyVersion, c.Status, c.DeleteRemote))
}

// DeleteCloudConnection deletes connection id if it is in scope, and with
// it (on delete cascade) the sync state of every document on it. It
// returns the deleted row or ErrNotFound.
func DeleteCloudConnection(ctx context.Context, tx pgx.Tx, scope Scope, id uuid.UUID) (CloudConnection, error) {
	return scanCloudConnection(tx.QueryRow(ctx, `delete from cloud_connections
		where id = $1 and `+scope.match("user_id", 2)+` returning `+cloudConnectionColumns, id, scope.arg()))
}

// MarkConnectionSynced records a successful sync on the connection: its
// last sync time, and the end of a failing streak. It returns the
// connection as it is now (active again if it was failing), or
// ErrNotFound.
func MarkConnectionSynced(ctx context.Context, tx pgx.Tx, id uuid.UUID) (CloudConnection, error) {
	return scanCloudConnection(tx.QueryRow(ctx, `update cloud_connections
		set last_synced_at = now(), last_error = null,
		    status = case when status = 'failing' then 'active' else status end,
		    updated_at = case when status = 'failing' then now() else updated_at end
		where id = $1
		returning `+cloudConnectionColumns, id))
}

// MarkConnectionFailing records that a sync on the connection failed for
// good: status failing (unless paused) and the error (cut to 1,000
// bytes). It returns the connection as it is now, or ErrNotFound.
func MarkConnectionFailing(ctx context.Context, tx pgx.Tx, id uuid.UUID, lastError string) (CloudConnection, error) {
	return scanCloudConnection(tx.QueryRow(ctx, `update cloud_connections
		set last_error = $2, status = case when status = 'active' then 'failing' else status end, updated_at = now()
		where id = $1
		returning `+cloudConnectionColumns, id, truncate(lastError, 1000)))
}

// CloudSync is a row of cloud_sync: the state of one document on one
// connection.
type CloudSync struct {
	DocumentID    uuid.UUID
	ConnectionID  uuid.UUID
	Operation     string
	Status        string
	Attempts      int
	LastError     *string
	RemoteKey     string
	ETag          *string
	NextAttemptAt time.Time
	SyncedAt      *time.Time
	CauseEventID  *uuid.UUID
	CorrelationID *uuid.UUID
	// RequestID and Traceparent are those of the handler that planned
	// the current operation ("" when unknown): the outcome's event keeps
	// the request id and continues the trace.
	RequestID   string
	Traceparent string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

const cloudSyncColumns = `document_id, connection_id, operation, status, attempts, last_error, remote_key, etag,
	next_attempt_at, synced_at, cause_event_id, correlation_id, coalesce(request_id, ''), coalesce(traceparent, ''),
	created_at, updated_at`

func scanCloudSync(row pgx.Row) (CloudSync, error) {
	var s CloudSync
	err := row.Scan(&s.DocumentID, &s.ConnectionID, &s.Operation, &s.Status, &s.Attempts, &s.LastError, &s.RemoteKey,
		&s.ETag, &s.NextAttemptAt, &s.SyncedAt, &s.CauseEventID, &s.CorrelationID, &s.RequestID, &s.Traceparent,
		&s.CreatedAt, &s.UpdatedAt)
	return s, translate(err)
}

func collectCloudSyncs(rows pgx.Rows, err error) ([]CloudSync, error) {
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CloudSync, error) { return scanCloudSync(r) })
	return out, translate(err)
}

// InsertCloudSync adds a pending copy of a document to a connection, due
// now, unless the pair has a row already. It reports whether it added one.
func InsertCloudSync(ctx context.Context, tx pgx.Tx, s CloudSync) (bool, error) {
	tag, err := tx.Exec(ctx, `insert into cloud_sync (document_id, connection_id, operation, status, remote_key,
			cause_event_id, correlation_id, request_id, traceparent)
		values ($1, $2, 'copy', 'pending', $3, $4, $5, nullif($6, ''), nullif($7, ''))
		on conflict (document_id, connection_id) do nothing`,
		s.DocumentID, s.ConnectionID, s.RemoteKey, s.CauseEventID, s.CorrelationID, truncate(s.RequestID, 200), s.Traceparent)
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

// ScheduleRemovals turns the copies of a deleted document on connections
// with delete_remote into pending removals, due now, caused by event
// cause and planned under origin's request id and traceparent. It returns
// how many rows it changed.
func ScheduleRemovals(ctx context.Context, tx pgx.Tx, documentID uuid.UUID, cause, correlation uuid.UUID, origin Origin) (int64, error) {
	tag, err := tx.Exec(ctx, `update cloud_sync s
		set operation = 'remove', status = 'pending', attempts = 0, last_error = null, next_attempt_at = now(),
		    cause_event_id = $2, correlation_id = $3, request_id = nullif($4, ''), traceparent = nullif($5, ''),
		    updated_at = now()
		from cloud_connections c
		where s.document_id = $1 and s.operation = 'copy' and c.id = s.connection_id and c.delete_remote`,
		documentID, cause, correlation, truncate(origin.RequestID, 200), origin.Traceparent)
	return tag.RowsAffected(), translate(err)
}

// ClaimDueSyncs takes up to limit due rows (pending, next_attempt_at
// passed, connection not paused), oldest first, skipping rows another
// transaction holds. Each is leased: its next_attempt_at moves lease (plus
// a second per LeaseBytesPerSecond of its document) ahead, so no other
// worker takes it meanwhile (and it becomes due again soon if the worker
// dies), and its attempts count goes up by one.
func ClaimDueSyncs(ctx context.Context, db DBTX, lease time.Duration, limit int) ([]CloudSync, error) {
	return collectCloudSyncs(db.Query(ctx, `update cloud_sync s
		set next_attempt_at = now() + $1::interval + make_interval(secs => due.size_bytes / $3::float8),
			attempts = s.attempts + 1, updated_at = now()
		from (select c.document_id as due_document, c.connection_id as due_connection, coalesce(d.size_bytes, 0) as size_bytes
			from cloud_sync c
			join cloud_connections k on k.id = c.connection_id
			left join documents d on d.id = c.document_id
			where c.status = 'pending' and c.next_attempt_at <= now() and k.status <> 'paused'
			order by c.next_attempt_at limit $2
			for update of c skip locked) due
		where s.document_id = due_document and s.connection_id = due_connection
		returning `+cloudSyncColumns, lease, limit, float64(LeaseBytesPerSecond)))
}

// LeaseBytesPerSecond is the slowest transfer a claim allows for: a row's
// lease is the base lease plus its document's size at this rate, so a big
// copy to a slow remote is not taken over (and started again) while it is
// still running.
const LeaseBytesPerSecond = 1 << 20

// LockCloudSync returns the row of (documentID, connectionID), locked until
// tx ends, or ErrNotFound.
func LockCloudSync(ctx context.Context, tx pgx.Tx, documentID, connectionID uuid.UUID) (CloudSync, error) {
	return scanCloudSync(tx.QueryRow(ctx, `select `+cloudSyncColumns+` from cloud_sync
		where document_id = $1 and connection_id = $2 for update`, documentID, connectionID))
}

// UpdateCloudSync writes the mutable columns of s, its cause (event,
// correlation, request id and traceparent) included.
func UpdateCloudSync(ctx context.Context, tx pgx.Tx, s CloudSync) error {
	var lastError *string
	if s.LastError != nil {
		e := truncate(*s.LastError, 1000)
		lastError = &e
	}
	_, err := tx.Exec(ctx, `update cloud_sync
		set operation = $3, status = $4, attempts = $5, last_error = $6, etag = $7, next_attempt_at = $8,
		    synced_at = $9, cause_event_id = $10, correlation_id = $11, request_id = nullif($12, ''),
		    traceparent = nullif($13, ''), updated_at = now()
		where document_id = $1 and connection_id = $2`,
		s.DocumentID, s.ConnectionID, s.Operation, s.Status, s.Attempts, lastError, s.ETag, s.NextAttemptAt, s.SyncedAt,
		s.CauseEventID, s.CorrelationID, truncate(s.RequestID, 200), s.Traceparent)
	return translate(err)
}

// DeletionCause returns what a removal planned for deleted document id
// keeps of its document.deleted event: the event id, its correlation id
// (nil if the audit row has none), and the request id and traceparent it
// was written with (from its audit row); ErrNotFound when the audit log
// has no such event.
func DeletionCause(ctx context.Context, db DBTX, id uuid.UUID) (eventID uuid.UUID, correlation *uuid.UUID, origin Origin, err error) {
	err = db.QueryRow(ctx, `select event_id, correlation_id, coalesce(request_id, ''), coalesce(traceparent, '')
		from audit_log where aggregate_id = $1 and action = $2 and event_id is not null
		order by id desc limit 1`, id, events.DocumentDeleted).Scan(&eventID, &correlation, &origin.RequestID, &origin.Traceparent)
	if err != nil {
		return uuid.UUID{}, nil, Origin{}, translate(err)
	}
	return eventID, correlation, origin, nil
}

// DeleteCloudSync removes the row of (documentID, connectionID).
func DeleteCloudSync(ctx context.Context, tx pgx.Tx, documentID, connectionID uuid.UUID) error {
	_, err := tx.Exec(ctx, `delete from cloud_sync where document_id = $1 and connection_id = $2`, documentID, connectionID)
	return translate(err)
}

// DocumentCloudSync returns the sync state of a document on each
// connection, by connection id.
func DocumentCloudSync(ctx context.Context, db DBTX, documentID uuid.UUID) ([]CloudSync, error) {
	return collectCloudSyncs(db.Query(ctx, `select `+cloudSyncColumns+` from cloud_sync
		where document_id = $1 order by connection_id`, documentID))
}

// RequeueFailedSyncs makes the failed rows of a connection pending again,
// due now, with a fresh attempt count (a connection set back to active
// after its failures were dealt with). It returns how many.
func RequeueFailedSyncs(ctx context.Context, tx pgx.Tx, connectionID uuid.UUID) (int64, error) {
	tag, err := tx.Exec(ctx, `update cloud_sync
		set status = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
		where connection_id = $1 and status = 'failed'`, connectionID)
	return tag.RowsAffected(), translate(err)
}

// LockDocumentStatus returns the document's status and locks its row
// until tx ends, so that an event about the document written in tx gets
// its outbox id in commit order (docs/events.md), and a concurrent delete
// is either seen or waits.
func LockDocumentStatus(ctx context.Context, tx pgx.Tx, id uuid.UUID) (string, error) {
	var status string
	err := tx.QueryRow(ctx, `select status from documents where id = $1 for no key update`, id).Scan(&status)
	return status, translate(err)
}
