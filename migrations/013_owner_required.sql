-- Phase 2: everything has an owner. Documents, topics, folders and cloud
-- connections that phase 1 left without one must first be given to a user
-- or deleted: `bin/api migrate --unowned-owner EMAIL` or
-- `bin/api migrate --unowned-delete` does that, through the pipeline, just
-- before this migration (store.AdoptUnowned, store.DeleteUnowned). Run
-- from the tern CLI on such a database, this migration stops and says so.
do $$
declare
    n bigint;
begin
    select (select count(*) from documents where user_id is null)
         + (select count(*) from topics where user_id is null)
         + (select count(*) from folders where user_id is null)
         + (select count(*) from cloud_connections where user_id is null)
      into n;
    if n > 0 then
        raise exception '% rows (documents, topics, folders, cloud connections) have no owner: give them to a user with `bin/api migrate --unowned-owner EMAIL` or delete them with `bin/api migrate --unowned-delete`', n;
    end if;
end
$$;

alter table documents alter column user_id set not null;
alter table topics alter column user_id set not null;
alter table folders alter column user_id set not null;
alter table cloud_connections alter column user_id set not null;

-- Ready documents adopted from phase 1 keep their object under
-- users/_unowned/ until the consumer moves it under their owner's prefix;
-- the sweep finds the ones a lost event left behind through this index
-- (empty once they have all moved).
create index documents_unowned_key_idx on documents (id) where storage_key like 'users/\_unowned/%';
