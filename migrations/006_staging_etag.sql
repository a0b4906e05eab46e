-- The ETag of the staged object the API wrote and hashed. Finalisation
-- copies the object only if it still has this ETag (a conditional
-- server-side copy), so the copy is the very bytes whose size and SHA-256
-- the upload measured, without reading them back. Null for documents
-- uploaded before: those are verified by reading the object.
alter table documents add column staging_etag text check (char_length(staging_etag) between 1 and 200);
