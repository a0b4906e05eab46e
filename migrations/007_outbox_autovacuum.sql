-- The outbox is a queue: every published row is deleted, so the table turns
-- over its whole content all the time. Vacuum it after every 10,000 dead
-- rows rather than after a fifth of the table, so the dead index entries a
-- relay scan has to walk stay few (autovacuum looks every minute).
alter table outbox set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
                        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);
