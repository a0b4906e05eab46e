-- Every event also goes to the audit stream (docuvault.audit) with where it
-- came from (client IP, user agent, request id, as its audit row has them),
-- so the outbox row carries those too until it is published.
alter table outbox
    add column client_ip inet,
    add column user_agent text check (char_length(user_agent) <= 1024),
    add column request_id text check (char_length(request_id) <= 200);
