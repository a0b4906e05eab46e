-- Tamper evidence for the audit log: a hash chain over its rows.
--
-- Link seq holds the SHA-256 of the previous link's hash followed by the
-- canonical content of one audit_log row (docs/events.md, "Audit chain").
-- Links are appended by one chainer (the relay that holds the chain lock)
-- in the order it sees rows commit, so writers never wait on the chain
-- head. `relay audit verify` recomputes the chain: an audit row changed,
-- deleted or slipped in below the head after it was chained breaks it.
-- The chain is insert-only for the runtime role, like audit_log itself.
create table audit_chain (
    seq        bigint primary key check (seq >= 1),
    audit_id   bigint not null unique,
    hash       bytea not null check (octet_length(hash) = 32),
    chained_at timestamptz not null default now()
);

do $$
declare
    app_role text := nullif(current_setting('docuvault.app_role', true), '');
begin
    if app_role is null then
        raise notice 'docuvault.app_role is not set: no runtime role to restrict';
        return;
    end if;
    execute format('revoke update, delete, truncate on audit_chain from %I', app_role);
end
$$;
