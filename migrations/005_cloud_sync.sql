-- Cloud sync: the state of every document on every cloud connection of its
-- owner.
--
-- cloud_connections (and its unique (user_id, lower(name)) index) exists
-- since 001. A row here is created when document.finalized is handled (one
-- per connection of the owner), and is the unit of work of the consumer's
-- sync workers: a row that is 'pending' with next_attempt_at in the past is
-- due. A worker claims a due row by moving next_attempt_at forward by a lease
-- (so a second worker skips it), uploads or removes the remote copy, and
-- then records the outcome with its event in one transaction.
--
--   operation  status    meaning
--   copy       pending   the copy is to be made (again, after a failure)
--   copy       synced    the remote copy exists at remote_key
--   copy       failed    given up after too many attempts (cloud_sync.failed)
--   remove     pending   the document was deleted: the remote copy is to go
--   remove     removed   the remote copy is gone
--   remove     failed    given up removing it (cloud_sync.failed)
create table cloud_sync (
    document_id     uuid not null references documents (id) on delete cascade,
    connection_id   uuid not null references cloud_connections (id) on delete cascade,
    operation       text not null default 'copy' check (operation in ('copy', 'remove')),
    status          text not null default 'pending'
        check (status in ('pending', 'synced', 'failed', 'removed')),
    -- Failed attempts of the current operation; reset when the operation
    -- changes.
    attempts        integer not null default 0 check (attempts >= 0),
    last_error      text check (char_length(last_error) <= 1000),
    -- Where the copy is (or goes) on the remote, fixed when the row is made:
    -- a later change of the connection's prefix does not lose track of it.
    remote_key      text not null check (char_length(remote_key) between 1 and 2048),
    -- The remote's ETag of the copy, when the remote reports one.
    etag            text check (char_length(etag) <= 1024),
    -- When the row is next due; while a worker holds it, the end of its lease.
    next_attempt_at timestamptz not null default now(),
    synced_at       timestamptz,
    -- The event that asked for the current operation, so the outcome's event
    -- carries its causation and correlation ids.
    cause_event_id  uuid,
    correlation_id  uuid,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    primary key (document_id, connection_id),
    check (status <> 'synced' or operation = 'copy'),
    check (status <> 'removed' or operation = 'remove')
);
-- Due rows, oldest first, for the workers.
create index cloud_sync_due_idx on cloud_sync (next_attempt_at) where status = 'pending';
-- A connection's rows (cascade on delete, re-queueing its failures).
create index cloud_sync_connection_idx on cloud_sync (connection_id);
