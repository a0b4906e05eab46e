-- Accounts and authentication (phase 2, issue #9). users and
-- refresh_tokens exist since 001; this adds what authentication needs.
--
-- token_version: access tokens (JWTs, stateless) carry the version of
-- their user when they were issued, and the API accepts a token only while
-- it is the user's current one. Changing the password raises it: every
-- access token issued before stops working at once, not at its expiry.
alter table users
    add column token_version integer not null default 1 check (token_version >= 1);

-- Only Argon2id hashes in PHC form are ever stored (internal/auth); a
-- user without a password (created by an administrator's tooling, or a
-- test) cannot log in.
alter table users
    add constraint users_password_hash_phc check (password_hash is null or password_hash like '$argon2id$v=19$%');

-- A refresh token is used (exchanged for its replacement) or revoked
-- after it was created, never before.
alter table refresh_tokens
    add constraint refresh_tokens_used_after check (used_at is null or used_at >= created_at),
    add constraint refresh_tokens_revoked_after check (revoked_at is null or revoked_at >= created_at);

-- Privileges: the runtime role reads and writes both tables (default
-- privileges, 001); nothing to grant or revoke here.
