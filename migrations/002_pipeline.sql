-- Upload pipeline: idempotent uploads, purge tracking, stuck uploads.

-- Idempotency-Key of the upload that created the document: a retried
-- request with the same key (per owner) returns the first document.
alter table documents
    add column idempotency_key text check (char_length(idempotency_key) between 1 and 255);
create unique index documents_idempotency_key on documents
    (coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), idempotency_key)
    where idempotency_key is not null;

-- When a deleted document's objects were removed. The consumer does it on
-- document.deleted; a sweep catches the deletions whose event was lost.
alter table documents add column purged_at timestamptz;
create index documents_unpurged_idx on documents (deleted_at) where status = 'deleted' and purged_at is null;

-- Stuck pending documents are found by age.
create index documents_pending_idx on documents (created_at) where status = 'pending';
