-- The outbox becomes a queue: the relay deletes the rows it publishes in the
-- transaction that publishes them, so the table holds only what is still to
-- be sent and its size does not grow with history. History lives in
-- audit_log (one row per event, written with it), from which any stream can
-- be rebuilt or replayed.

-- Rows published before this migration were sent already.
delete from outbox where published_at is not null;
drop index outbox_unpublished_idx;
alter table outbox drop column published_at, drop column attempts;

-- json keeps the text as the writer encoded it, so the relay sends it as is
-- instead of having PostgreSQL re-serialise jsonb for every row.
alter table outbox alter column payload type json using payload::json;

-- When the sweep last re-queued a stuck upload's document.uploaded event,
-- so a document still pending is re-queued at most once per period.
alter table documents add column requeued_at timestamptz;

-- The audit row carries everything of its event's envelope, so an event can
-- be rebuilt from it once its outbox row is gone.
alter table audit_log add column causation_id uuid;
