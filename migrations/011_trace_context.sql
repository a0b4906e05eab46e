-- Trace context: every event carries the W3C traceparent of the span that
-- wrote it (the HTTP request's, or a consumer's under the trace of the
-- event it handled), next to the request id it already has, so one upload
-- can be followed from its request to its cloud copies (internal/tracing,
-- docs/events.md "Tracing an upload"). The relay puts both in the stream
-- metadata of every message; the audit row keeps them for replay and for
-- the stuck-upload sweep.
--
-- Only version 00 is ever written, always normalised
-- (00-{trace id}-{span id}-{flags}, lowercase hex).
alter table outbox
    add column traceparent text check (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
alter table audit_log
    add column traceparent text check (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');

-- A planned cloud copy or removal keeps the request id and traceparent of
-- the handler that planned it (like cause_event_id and correlation_id), so
-- the outcome's event, written later by a sync worker, stays in the trace.
alter table cloud_sync
    add column request_id text check (char_length(request_id) <= 200),
    add column traceparent text check (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');

-- Privileges: the runtime role's grants on these tables are table-wide
-- (001), so it may write the new columns where it may write the rows, and
-- audit_log stays append-only for it (no UPDATE of any column).
