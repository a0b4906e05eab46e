-- Quotas: a row per owner holds its usage and, optionally, its own limits.
-- A null limit means the configured default (QUOTA_DEFAULT_BYTES,
-- QUOTA_DEFAULT_DOCUMENTS), so changing the default applies to everyone who
-- has no limit of their own. Usage is charged in the transaction that marks
-- a document ready and freed in the one that deletes it: it always equals
-- the sum of the owner's ready documents.
alter table quotas
    alter column max_bytes drop not null,
    alter column max_documents drop not null;
