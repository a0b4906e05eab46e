-- The audit owner rule of 014, unchanged, as PL/pgSQL instead of SQL.
--
-- A SQL function whose body holds a subquery is not inlined, so every
-- transaction that wrote an audit row parsed and planned the rule's body
-- anew on the trigger's first call: about 200 µs of PostgreSQL CPU per
-- upload (one transaction each), a fifth of the upload's share. PL/pgSQL
-- keeps its plans for the session. (The parameter is qualified in the
-- lookup so that a documents column of the same name could not shadow it.)
create or replace function docuvault_audit_owner(aggregate_type text, aggregate_id uuid, details jsonb) returns uuid
    language plpgsql stable
    as $$
begin
    if aggregate_type = 'user' then
        return aggregate_id;
    elsif details->>'user_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' then
        return (details->>'user_id')::uuid;
    elsif aggregate_type = 'document' then
        return (select d.user_id from documents d where d.id = docuvault_audit_owner.aggregate_id);
    end if;
    return null;
end
$$;
