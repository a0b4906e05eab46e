-- Whose resource each audit row is about, so that a user's audit log
-- (GET /api/v1/audit, internal/store/audit.go) is read from an index
-- instead of by testing every row in id order (which scanned the whole
-- table for a user with little history).
--
-- The rule is the one the API applied per row: a document's rows (its
-- cloud_sync.* included) belong to the document's owner, a user's rows to
-- that account, a topic's, folder's or cloud connection's to the user_id
-- its event data carries. Document events carry their owner too; the
-- document is looked up only for rows whose data has none (cloud_sync.*,
-- and phase 1 rows of documents since given an owner).
--
-- owner_id is derived data: it is not part of the audit chain's canonical
-- content (internal/store/chain.go lists the chained columns).
alter table audit_log add column owner_id uuid;

create function docuvault_audit_owner(aggregate_type text, aggregate_id uuid, details jsonb) returns uuid
    language sql stable
    return case
        when aggregate_type = 'user' then aggregate_id
        when details->>'user_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
            then (details->>'user_id')::uuid
        when aggregate_type = 'document' then (select d.user_id from documents d where d.id = aggregate_id)
    end;

create function docuvault_audit_set_owner() returns trigger
    language plpgsql
    as $$
begin
    new.owner_id := docuvault_audit_owner(new.aggregate_type, new.aggregate_id, new.details);
    return new;
end
$$;

create trigger audit_log_owner before insert on audit_log
    for each row execute function docuvault_audit_set_owner();

update audit_log set owner_id = docuvault_audit_owner(aggregate_type, aggregate_id, details);

create index audit_log_owner_idx on audit_log (owner_id, id) where owner_id is not null;
