-- The envelope version of each event, next to its type: the relay puts it in
-- the Watermill metadata, and an event rebuilt from its audit row keeps it,
-- once some type is at version 2. Every event so far is version 1.
alter table outbox add column version smallint not null default 1 check (version >= 1);
alter table audit_log add column version smallint not null default 1 check (version >= 1);
