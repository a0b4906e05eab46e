// Package check verifies, at a quiescent point, the invariants DocuVault
// promises (docs/invariants.md): every acknowledged upload ended ready,
// rejected with a reason or deleted; every ready document's object is
// under its final key with its size (and, when asked, its SHA-256); no
// staged object outlives its grace; no object lacks a row; quota usage is
// the sum of ready sizes; synced cloud copies exist; the audit chain
// holds; the outbox is drained; every recorded event reached its streams.
//
// It reads everything it checks (the whole bucket listing, every stream),
// so it is a tool for tests, chaos runs and an operator's occasional
// audit, not for a hot path.
package check

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
)

// Config is what the checker reads and how patient it is.
type Config struct {
	DB    *pgxpool.Pool
	Blobs *blob.Store
	Redis *redis.Client
	// Connector opens cloud connections to look for their copies (nil:
	// cloud copies are not checked).
	Connector *cloudsync.Connector
	// Grace is how old unfinished work may be before it counts as stuck:
	// pending documents and cloud copies, staged objects, unchained audit
	// rows (default 1 min: run the checker after the system went quiet).
	Grace time.Duration
	// StagingGrace is how old a staged object of a document that is not
	// pending (or of no document: an upload cut off before its commit)
	// may be; the consumer's sweep removes those after an hour (default
	// Grace).
	StagingGrace time.Duration
	// OutboxAge is the age above which an outbox row is a finding
	// (default 1 min).
	OutboxAge time.Duration
	// EventsSince limits the events check to events recorded after it:
	// a Redis that lost its data (restarted without persistence) lost the
	// entries before (zero: all).
	EventsSince time.Time
	// Deep reads every ready object back to compare its SHA-256.
	Deep bool
}

// Finding is one broken invariant.
type Finding struct {
	Invariant string // documents, objects, quotas, cloud_sync, audit_chain, outbox, events
	Subject   string // what it is about: a document id, a key, a stream
	Detail    string
}

func (f Finding) String() string { return f.Invariant + ": " + f.Subject + ": " + f.Detail }

// Report is the outcome of a check.
type Report struct {
	Findings []Finding
	// Counts of what was looked at, and duplicates seen (at-least-once
	// delivery allows them; they are reported, not findings).
	Documents, Objects, Links, Events, Duplicates int
	ByStatus                                      map[string]int
}

// maxFindings bounds the findings kept per invariant; the rest are counted.
const maxFindings = 100

type checker struct {
	Config
	rep     Report
	found   map[string]int // findings per invariant
	dropped map[string]int // of those, not listed
}

func (c *checker) find(invariant, subject, format string, args ...any) {
	c.found[invariant]++
	if c.found[invariant] > maxFindings {
		c.dropped[invariant]++
		return
	}
	c.rep.Findings = append(c.rep.Findings, Finding{invariant, subject, fmt.Sprintf(format, args...)})
}

// Run checks every invariant and returns what it found; an error means it
// could not look (a service down), not that an invariant is broken.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg.Grace = cmp.Or(cfg.Grace, time.Minute)
	cfg.OutboxAge = cmp.Or(cfg.OutboxAge, time.Minute)
	cfg.StagingGrace = cmp.Or(cfg.StagingGrace, cfg.Grace)
	c := &checker{Config: cfg, rep: Report{ByStatus: map[string]int{}}, found: map[string]int{}, dropped: map[string]int{}}
	for _, step := range []func(context.Context) error{c.documents, c.objects, c.quotas, c.cloudCopies, c.auditChain, c.outbox, c.events} {
		if err := step(ctx); err != nil {
			return c.rep, err
		}
	}
	for inv, n := range c.dropped {
		c.rep.Findings = append(c.rep.Findings, Finding{inv, "…", fmt.Sprintf("%d more findings not listed", n)})
	}
	return c.rep, nil
}

// documents: every document ended (ready, rejected with a reason, or
// deleted and purged) unless it is younger than the grace.
func (c *checker) documents(ctx context.Context) error {
	rows, err := c.DB.Query(ctx, `select id, status, reject_reason, created_at, deleted_at, purged_at from documents`)
	if err != nil {
		return fmt.Errorf("read documents: %w", err)
	}
	old := time.Now().Add(-c.Grace)
	var id uuid.UUID
	var status string
	var reason *string
	var created time.Time
	var deleted, purged *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &status, &reason, &created, &deleted, &purged}, func() error {
		c.rep.Documents++
		c.rep.ByStatus[status]++
		switch {
		case status == store.StatusPending && created.Before(old):
			c.find("documents", id.String(), "still pending %s after its upload", time.Since(created).Round(time.Second))
		case status == store.StatusRejected && (reason == nil || *reason == ""):
			c.find("documents", id.String(), "rejected without a reason")
		case status == store.StatusDeleted && purged == nil && deleted != nil && deleted.Before(old):
			c.find("documents", id.String(), "deleted %s ago and its objects not purged", time.Since(*deleted).Round(time.Second))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read documents: %w", err)
	}
	// Finalised once in effect: one outcome event per document.
	rows, err = c.DB.Query(ctx, `select aggregate_id, count(*) from audit_log
		where action in ('document.finalized', 'document.rejected') group by aggregate_id having count(*) > 1`)
	if err != nil {
		return fmt.Errorf("read outcomes: %w", err)
	}
	var n int
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		c.find("documents", id.String(), "finalised %d times", n)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read outcomes: %w", err)
	}
	return nil
}

// object is a listed object.
type object struct {
	size     int64
	modified time.Time
}

// objects: every ready document's object is at its storage key with its
// size (and SHA-256 when Deep); every other object is a staged upload
// still pending or younger than the grace.
func (c *checker) objects(ctx context.Context) error {
	listed := map[string]object{}
	err := c.Blobs.List(ctx, "", func(key string, info minio.ObjectInfo) error {
		listed[key] = object{info.Size, info.LastModified}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list bucket %s: %w", c.Blobs.Bucket(), err)
	}
	c.rep.Objects = len(listed)

	rows, err := c.DB.Query(ctx, `select id, storage_key, size_bytes, sha256 from documents where status = 'ready'`)
	if err != nil {
		return fmt.Errorf("read ready documents: %w", err)
	}
	type ready struct {
		id   uuid.UUID
		key  string
		size int64
		sum  []byte
	}
	var docs []ready
	var d ready
	if _, err := pgx.ForEachRow(rows, []any{&d.id, &d.key, &d.size, &d.sum}, func() error {
		docs = append(docs, d)
		return nil
	}); err != nil {
		return fmt.Errorf("read ready documents: %w", err)
	}
	for _, d := range docs {
		o, ok := listed[d.key]
		delete(listed, d.key)
		switch {
		case !ok:
			c.find("objects", d.id.String(), "ready, but no object at %s", d.key)
			continue
		case o.size != d.size:
			c.find("objects", d.id.String(), "object %s has %d bytes, the row says %d", d.key, o.size, d.size)
			continue
		case !c.Deep:
			continue
		}
		size, sum, err := c.Blobs.Hash(ctx, d.key)
		if err != nil {
			return fmt.Errorf("read %s: %w", d.key, err)
		}
		if size != d.size || !bytes.Equal(sum, d.sum) {
			c.find("objects", d.id.String(), "object %s does not have the SHA-256 the row records", d.key)
		}
	}

	// What is left must be staged uploads in progress.
	var staged []uuid.UUID
	for key := range listed {
		if id, err := uuid.Parse(strings.TrimPrefix(key, "staging/")); err == nil && strings.HasPrefix(key, "staging/") {
			staged = append(staged, id)
		}
	}
	pending, err := store.PendingDocumentIDs(ctx, c.DB, staged)
	if err != nil {
		return fmt.Errorf("read pending documents: %w", err)
	}
	for key, o := range listed {
		if !strings.HasPrefix(key, "staging/") {
			c.find("objects", key, "object without a ready document")
			continue
		}
		id, err := uuid.Parse(strings.TrimPrefix(key, "staging/"))
		switch {
		case err != nil:
			c.find("objects", key, "staged object that names no document")
		case pending[id]:
		case o.modified.Before(time.Now().Add(-c.StagingGrace)):
			c.find("objects", key, "staged %s ago for a document that is not pending (no row, or finished)", time.Since(o.modified).Round(time.Second))
		}
	}
	return nil
}

// quotas: each owner's usage is the count and sum of sizes of their ready
// documents.
func (c *checker) quotas(ctx context.Context) error {
	rows, err := c.DB.Query(ctx, `
		with ready as (
			select user_id, count(*) as docs, sum(size_bytes) as bytes
			from documents where status = 'ready' and user_id is not null group by user_id)
		select coalesce(q.user_id, r.user_id), coalesce(q.used_bytes, 0), coalesce(q.used_documents, 0),
		       coalesce(r.bytes, 0)::bigint, coalesce(r.docs, 0)
		from quotas q full join ready r on r.user_id = q.user_id
		where coalesce(q.used_bytes, 0) <> coalesce(r.bytes, 0) or coalesce(q.used_documents, 0) <> coalesce(r.docs, 0)`)
	if err != nil {
		return fmt.Errorf("read quotas: %w", err)
	}
	var owner uuid.UUID
	var usedBytes, readyBytes, usedDocs, readyDocs int64
	_, err = pgx.ForEachRow(rows, []any{&owner, &usedBytes, &usedDocs, &readyBytes, &readyDocs}, func() error {
		c.find("quotas", owner.String(), "usage %d bytes in %d documents; ready documents hold %d bytes in %d",
			usedBytes, usedDocs, readyBytes, readyDocs)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read quotas: %w", err)
	}
	return nil
}

// cloudCopies: a synced copy is on its remote with the document's size, a
// removed one is gone, and nothing is pending longer than the grace.
func (c *checker) cloudCopies(ctx context.Context) error {
	rows, err := c.DB.Query(ctx, `select s.document_id, s.connection_id, s.operation, s.status, s.remote_key, s.updated_at, d.size_bytes
		from cloud_sync s join documents d on d.id = s.document_id order by s.connection_id`)
	if err != nil {
		return fmt.Errorf("read cloud_sync: %w", err)
	}
	type syncRow struct {
		doc, conn          uuid.UUID
		op, status, remote string
		updated            time.Time
		size               int64
	}
	var all []syncRow
	var r syncRow
	if _, err := pgx.ForEachRow(rows, []any{&r.doc, &r.conn, &r.op, &r.status, &r.remote, &r.updated, &r.size}, func() error {
		all = append(all, r)
		return nil
	}); err != nil {
		return fmt.Errorf("read cloud_sync: %w", err)
	}
	old := time.Now().Add(-c.Grace)
	// Every document finalised while a connection of its owner was
	// active has a copy planned there (and then made, below).
	missing, err := c.DB.Query(ctx, `select d.id, cc.id from documents d
		join cloud_connections cc on cc.user_id is not distinct from d.user_id
		where d.status = 'ready' and cc.status = 'active' and cc.created_at < d.finalized_at and d.finalized_at < $1
		  and not exists (select 1 from cloud_sync s where s.document_id = d.id and s.connection_id = cc.id)`, old)
	if err != nil {
		return fmt.Errorf("read cloud connections: %w", err)
	}
	var doc, conn uuid.UUID
	if _, err := pgx.ForEachRow(missing, []any{&doc, &conn}, func() error {
		c.find("cloud_sync", doc.String()+" on "+conn.String(), "ready, and no copy was ever planned on the owner's active connection")
		return nil
	}); err != nil {
		return fmt.Errorf("read cloud connections: %w", err)
	}
	// Every document deleted long enough ago has its copies removed where
	// the connection asks for that.
	kept, err := c.DB.Query(ctx, `select s.document_id, s.connection_id from cloud_sync s
		join documents d on d.id = s.document_id join cloud_connections cc on cc.id = s.connection_id
		where d.status = 'deleted' and d.deleted_at < $1 and cc.delete_remote and cc.status = 'active'
		  and s.operation = 'copy' and s.status = 'synced'`, old)
	if err != nil {
		return fmt.Errorf("read cloud copies of deleted documents: %w", err)
	}
	if _, err := pgx.ForEachRow(kept, []any{&doc, &conn}, func() error {
		c.find("cloud_sync", doc.String()+" on "+conn.String(), "deleted, and its copy was never planned for removal")
		return nil
	}); err != nil {
		return fmt.Errorf("read cloud copies of deleted documents: %w", err)
	}
	providers := map[uuid.UUID]cloudsync.Provider{}
	for _, r := range all {
		subject := r.doc.String() + " on " + r.conn.String()
		if r.status == "pending" {
			if r.updated.Before(old) {
				c.find("cloud_sync", subject, "%s still pending %s after it was planned", r.op, time.Since(r.updated).Round(time.Second))
			}
			continue
		}
		if c.Connector == nil || r.status == "failed" {
			continue
		}
		p, ok := providers[r.conn]
		if !ok {
			conn, err := store.CloudConnectionByID(ctx, c.DB, r.conn, false)
			if err != nil {
				return fmt.Errorf("read connection %s: %w", r.conn, err)
			}
			if p, err = c.Connector.Open(conn); err != nil {
				return fmt.Errorf("open connection %s: %w", r.conn, err)
			}
			providers[r.conn] = p
		}
		size, err := p.Size(ctx, r.remote)
		switch {
		case r.status == "synced" && errors.Is(err, cloudsync.ErrRemoteMissing):
			c.find("cloud_sync", subject, "synced, but nothing at %s", r.remote)
		case r.status == "synced" && err == nil && size != r.size:
			c.find("cloud_sync", subject, "the copy at %s has %d bytes, the document %d", r.remote, size, r.size)
		case r.status == "removed" && err == nil:
			c.find("cloud_sync", subject, "removed, but %s is still there", r.remote)
		case err != nil && !errors.Is(err, cloudsync.ErrRemoteMissing):
			return fmt.Errorf("look at %s on connection %s: %w", r.remote, r.conn, err)
		}
	}
	return nil
}

// auditChain: the chain verifies and no audit row older than the grace
// is unchained.
func (c *checker) auditChain(ctx context.Context) error {
	rep, err := relay.VerifyChain(ctx, c.DB, time.Time{}, c.Grace, nil)
	if err != nil {
		return fmt.Errorf("verify the audit chain: %w", err)
	}
	c.rep.Links = int(rep.Links)
	if rep.Break != nil {
		c.find("audit_chain", "link "+strconv.FormatInt(rep.Break.Seq, 10), "%s", rep.Break.Error())
	}
	var unchained int
	if err := c.DB.QueryRow(ctx, `select count(*) from audit_log a where a.occurred_at < $1
		and not exists (select 1 from audit_chain c where c.audit_id = a.id)`, time.Now().Add(-c.Grace)).Scan(&unchained); err != nil {
		return fmt.Errorf("count unchained audit rows: %w", err)
	}
	if unchained > 0 {
		c.find("audit_chain", "audit_log", "%d rows older than %s are not chained (is a relay running?)", unchained, c.Grace)
	}
	return nil
}

// outbox: nothing waits longer than OutboxAge.
func (c *checker) outbox(ctx context.Context) error {
	var n int
	var oldest *time.Time
	if err := c.DB.QueryRow(ctx, `select count(*), min(created_at) from outbox where created_at < $1`,
		time.Now().Add(-c.OutboxAge)).Scan(&n, &oldest); err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	if n > 0 {
		c.find("outbox", "outbox", "%d events older than %s not published (oldest from %s)", n, c.OutboxAge, oldest.UTC().Format(time.RFC3339))
	}
	return nil
}

// events: every event recorded in the audit log is on its stream and on
// the audit stream (unless the stream was trimmed past it), nothing is on
// a stream that was never recorded, no consumer group holds unacknowledged
// entries, and no message went to the dead-letter stream.
func (c *checker) events(ctx context.Context) error {
	want := map[string]map[uuid.UUID]bool{}
	rows, err := c.DB.Query(ctx, `select event_id, aggregate_type, occurred_at from audit_log
		where event_id is not null and occurred_at > $1`, c.EventsSince)
	if err != nil {
		return fmt.Errorf("read audit log: %w", err)
	}
	type recorded struct {
		id     uuid.UUID
		stream string
		at     time.Time
	}
	var recs []recorded
	var id uuid.UUID
	var aggType string
	var at time.Time
	if _, err := pgx.ForEachRow(rows, []any{&id, &aggType, &at}, func() error {
		stream := events.Envelope{AggregateType: aggType}.Stream()
		recs = append(recs, recorded{id, stream, at})
		return nil
	}); err != nil {
		return fmt.Errorf("read audit log: %w", err)
	}
	c.rep.Events = len(recs)

	trimmedBefore := map[string]time.Time{}
	for _, stream := range events.Streams {
		on, before, err := c.readStream(ctx, stream)
		if err != nil {
			return err
		}
		trimmedBefore[stream] = before
		want[stream] = map[uuid.UUID]bool{}
		for id, n := range on {
			want[stream][id] = true
			c.rep.Duplicates += n - 1
		}
		if err := c.pending(ctx, stream); err != nil {
			return err
		}
	}
	seen := map[string]map[uuid.UUID]bool{}
	for _, r := range recs {
		for _, stream := range []string{r.stream, events.StreamAudit} {
			if seen[stream] == nil {
				seen[stream] = map[uuid.UUID]bool{}
			}
			seen[stream][r.id] = true
			if want[stream] != nil && !want[stream][r.id] && r.at.After(trimmedBefore[stream]) {
				c.find("events", r.id.String(), "recorded %s but not on %s", r.at.UTC().Format(time.RFC3339Nano), stream)
			}
		}
	}
	// Stream entries of events recorded before EventsSince are not
	// looked for among the recorded ones.
	var earlier []uuid.UUID
	if !c.EventsSince.IsZero() {
		rows, err := c.DB.Query(ctx, `select event_id from audit_log where event_id is not null and occurred_at <= $1`, c.EventsSince)
		if err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		if earlier, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID]); err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
	}
	for stream, ids := range want {
		for _, id := range earlier {
			delete(ids, id)
		}
		for id := range ids {
			if !seen[stream][id] {
				c.find("events", id.String(), "on %s but never recorded", stream)
			}
		}
	}
	n, err := c.Redis.XLen(ctx, "docuvault.dead_letter").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read docuvault.dead_letter: %w", err)
	}
	if n > 0 {
		c.find("events", "docuvault.dead_letter", "%d messages were given up on", n)
	}
	return nil
}

// readStream counts each message id on stream, and returns before which
// time recorded events may have been trimmed from it (zero when no entry
// was ever removed).
func (c *checker) readStream(ctx context.Context, stream string) (map[uuid.UUID]int, time.Time, error) {
	on := map[uuid.UUID]int{}
	var before time.Time
	info, err := c.Redis.XInfoStream(ctx, stream).Result()
	switch {
	case err != nil && strings.Contains(err.Error(), "no such key"):
		return on, before, nil
	case err != nil:
		return nil, before, fmt.Errorf("read %s: %w", stream, err)
	}
	// Entries go only by age (XTRIM MINID), so once any was removed,
	// events that occurred before the oldest entry left may have been
	// trimmed; every later one must be there (it was published after).
	if info.MaxDeletedEntryID != "" && info.MaxDeletedEntryID != "0-0" {
		if ms, _, ok := strings.Cut(info.FirstEntry.ID, "-"); ok {
			if v, err := strconv.ParseInt(ms, 10, 64); err == nil {
				before = time.UnixMilli(v)
			}
		}
	}
	start := "-"
	for {
		entries, err := c.Redis.XRangeN(ctx, stream, start, "+", 10000).Result()
		if err != nil {
			return nil, before, fmt.Errorf("read %s: %w", stream, err)
		}
		for _, e := range entries {
			msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
			if err != nil {
				c.find("events", stream+" "+e.ID, "not a Watermill message: %v", err)
				continue
			}
			id, err := uuid.Parse(msg.UUID)
			if err != nil {
				c.find("events", stream+" "+e.ID, "message id %q is not an event id", msg.UUID)
				continue
			}
			on[id]++
		}
		if len(entries) < 10000 {
			return on, before, nil
		}
		start = "(" + entries[len(entries)-1].ID
	}
}

// pending reports entries delivered to a consumer group and never
// acknowledged.
func (c *checker) pending(ctx context.Context, stream string) error {
	groups, err := c.Redis.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return nil
		}
		return fmt.Errorf("read the groups of %s: %w", stream, err)
	}
	for _, g := range groups {
		if g.Pending > 0 {
			c.find("events", stream+" group "+g.Name, "%d entries delivered and not acknowledged", g.Pending)
		}
	}
	return nil
}
