// Package cloudsync copies documents to the cloud storage their owners
// connected (S3-compatible buckets and WebDAV folders), and removes the
// copies of deleted documents.
//
// It works in two steps, so that a slow or unreachable remote never holds
// up the document stream:
//
//  1. Handle, a Watermill handler in its own consumer group on
//     docuvault.documents, turns document.finalized into one pending copy
//     (a cloud_sync row) per connection of the document's owner, and
//     document.deleted into pending removals on the connections with
//     delete_remote. Each event is handled once (processed_events, in the
//     transaction of the rows).
//  2. Run's workers claim due rows (FOR UPDATE SKIP LOCKED, then a lease),
//     copy or remove, and record the outcome with its event in one
//     transaction: cloud_sync.completed, cloud_sync.removed, or, after
//     RetryPolicy.MaxAttempts, cloud_sync.failed. A failed attempt is
//     retried after an exponential, capped, jittered backoff. A
//     connection whose status this changes (active to failing after a
//     final failure, failing to active after a copy) gets
//     cloud_connection.failing or cloud_connection.recovered in the same
//     transaction.
//
// The copy of a document on a connection has a fixed key, so an attempt
// repeated (a duplicate event, a worker that died after uploading, two
// workers whose leases overlapped) overwrites the same remote object: one
// copy, and one completed event, since only the transition from pending to
// synced writes it.
package cloudsync

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/tracing"
)

// ConsumerName is the Redis consumer group of the sync handler and its
// name in processed_events.
const ConsumerName = "cloud-sync"

// ErrMalformed marks an event that can never be handled (bad JSON).
var ErrMalformed = errors.New("malformed event")

// RetryPolicy is how failed attempts are retried: attempt n (counting from
// 1) that fails is retried after BaseDelay·2^(n-1), at most MaxDelay, ±20%
// jitter; the MaxAttempts-th failure is final.
type RetryPolicy struct {
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
}

// DefaultRetryPolicy gives a remote about three hours to come back: ten
// attempts, 30 s apart at first, then doubling up to an hour.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 10, BaseDelay: 30 * time.Second, MaxDelay: time.Hour}

// Delay is the wait after the attempts-th failed attempt.
func (p RetryPolicy) Delay(attempts int) time.Duration {
	d := p.BaseDelay
	for i := 1; i < attempts && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Config is how the workers run. Zero fields take the defaults.
type Config struct {
	// Workers is how many copies or removals run at once (default 4).
	Workers int
	// PollInterval is how often the workers look for due rows (default
	// 5 s); a handled event wakes them at once.
	PollInterval time.Duration
	// Lease is how long a claimed row is left to its worker before
	// another may take it (default 2 min), plus a second per MiB of the
	// document (store.LeaseBytesPerSecond): a worker that died holds its
	// rows that long.
	Lease time.Duration
	// Retry is the retry policy (default DefaultRetryPolicy).
	Retry RetryPolicy
	// CatchUpEvery is how often Run looks for events the stream lost
	// (default 1 min); CatchUpAfter how old an unhandled event must be to
	// count as lost (default 2 min); CatchUpWindow how far back it looks
	// (default 7 days, the streams' default retention).
	CatchUpEvery, CatchUpAfter, CatchUpWindow time.Duration
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 5 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 2 * time.Minute
	}
	if c.Retry.MaxAttempts <= 0 {
		c.Retry = DefaultRetryPolicy
	}
	c.CatchUpEvery = cmp.Or(c.CatchUpEvery, time.Minute)
	c.CatchUpAfter = cmp.Or(c.CatchUpAfter, 2*time.Minute)
	c.CatchUpWindow = cmp.Or(c.CatchUpWindow, 7*24*time.Hour)
	return c
}

// Syncer handles the document stream for cloud sync and runs the workers.
type Syncer struct {
	log    *slog.Logger
	db     *pgxpool.Pool
	blobs  *blob.Store
	conns  *Connector
	notify *store.Notifier
	cfg    Config
	wake   chan struct{}
	// caughtUpTo is where CatchUp's next look starts (Run's goroutine
	// only).
	caughtUpTo time.Time
}

// New returns a Syncer. blobs is DocuVault's own bucket, where copies are
// read from; notify (may be nil) wakes the relay after commits that wrote
// events.
func New(log *slog.Logger, db *pgxpool.Pool, blobs *blob.Store, conns *Connector, notify *store.Notifier, cfg Config) *Syncer {
	return &Syncer{log: log, db: db, blobs: blobs, conns: conns, notify: notify, cfg: cfg.withDefaults(), wake: make(chan struct{}, 1)}
}

// Handle is the Watermill handler: it plans copies on document.finalized,
// removals on document.deleted, and ignores the other types. The planned
// rows keep the message's request id and the handler's span under its
// trace (tracing.MessageContext), for the outcome's event.
func (s *Syncer) Handle(msg *message.Message) error {
	switch msg.Metadata.Get(events.MetaType) {
	case events.DocumentFinalized, events.DocumentDeleted, "":
	default:
		return nil // another type (the relay sets it on every message): not decoded
	}
	var ev events.Envelope
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return fmt.Errorf("%w: message %s: %v", ErrMalformed, msg.UUID, err)
	}
	return s.HandleEvent(tracing.MessageContext(msg), ev)
}

// HandleEvent is Handle for a decoded event, handled in ctx's request id
// and span.
func (s *Syncer) HandleEvent(ctx context.Context, ev events.Envelope) error {
	var err error
	switch ev.Type {
	case events.DocumentFinalized:
		err = s.planCopies(ctx, ev)
	case events.DocumentDeleted:
		err = s.planRemovals(ctx, ev)
	default:
		return nil
	}
	if err == nil {
		s.Wake()
	}
	return err
}

// CatchUp handles, from the audit log, the document.finalized and
// document.deleted events of the last CatchUpWindow that this consumer has
// not handled although they are older than CatchUpAfter: their stream
// entries were lost (Redis restarted without its data, or the stream was
// trimmed before the group read it). Handling is idempotent (the
// processed mark), so an event merely slow to arrive is handled once. It
// returns how many it handled.
func (s *Syncer) CatchUp(ctx context.Context) (int, error) {
	// After a first look over the whole window, each looks only at what
	// the previous one had not (events are older than CatchUpAfter when
	// looked at, so they committed long before).
	before := time.Now().Add(-s.cfg.CatchUpAfter)
	since := s.caughtUpTo
	if since.IsZero() || since.Before(time.Now().Add(-s.cfg.CatchUpWindow)) {
		since = time.Now().Add(-s.cfg.CatchUpWindow)
	}
	n := 0
	for {
		lost, err := store.UnhandledEvents(ctx, s.db, ConsumerName, []string{events.DocumentFinalized, events.DocumentDeleted},
			since, before, 500)
		if err != nil {
			return n, err
		}
		for _, u := range lost {
			hctx := tracing.Continue(tracing.WithRequestID(ctx, u.Origin.RequestID), u.Origin.Traceparent)
			if err := s.HandleEvent(hctx, u.Event); err != nil {
				return n, fmt.Errorf("handle %s %s: %w", u.Event.Type, u.Event.ID, err)
			}
			n++
		}
		if len(lost) < 500 {
			s.caughtUpTo = before
			return n, nil
		}
	}
}

// Wake makes the workers look for due rows now.
func (s *Syncer) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// planCopies adds a pending copy of the finalised document for every
// connection of its owner. Paused connections get theirs too, held until
// they are resumed. A document no longer ready (deleted meanwhile) gets
// none.
func (s *Syncer) planCopies(ctx context.Context, ev events.Envelope) error {
	n := 0
	err := store.WithTx(ctx, s.db, func(tx pgx.Tx) error {
		fresh, err := store.MarkProcessed(ctx, tx, ConsumerName, ev.ID)
		if err != nil || !fresh {
			return err
		}
		doc, err := store.GetDocument(ctx, tx, ev.AggregateID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if doc.Status != store.StatusReady {
			return nil
		}
		conns, err := store.OwnerCloudConnections(ctx, tx, doc.UserID)
		if err != nil {
			return err
		}
		corr := ev.CorrelationID
		for _, c := range conns {
			added, err := store.InsertCloudSync(ctx, tx, store.CloudSync{
				DocumentID: doc.ID, ConnectionID: c.ID, RemoteKey: RemoteKey(c.Settings, doc),
				CauseEventID: &ev.ID, CorrelationID: &corr,
				RequestID: tracing.RequestID(ctx), Traceparent: tracing.Traceparent(ctx),
			})
			if err != nil {
				return err
			}
			if added {
				n++
			}
		}
		return nil
	})
	if err == nil && n > 0 {
		s.log.Info("cloud copies planned", append([]any{"document_id", ev.AggregateID, "connections", n}, tracing.EventAttrs(ctx, ev)...)...)
	}
	return err
}

// planRemovals turns the copies of a deleted document into pending
// removals on the connections with delete_remote; the others keep their
// copy.
func (s *Syncer) planRemovals(ctx context.Context, ev events.Envelope) error {
	var n int64
	err := store.WithTx(ctx, s.db, func(tx pgx.Tx) error {
		fresh, err := store.MarkProcessed(ctx, tx, ConsumerName, ev.ID)
		if err != nil || !fresh {
			return err
		}
		n, err = store.ScheduleRemovals(ctx, tx, ev.AggregateID, ev.ID, ev.CorrelationID,
			store.Origin{RequestID: tracing.RequestID(ctx), Traceparent: tracing.Traceparent(ctx)})
		return err
	})
	if err == nil && n > 0 {
		s.log.Info("cloud removals planned", append([]any{"document_id", ev.AggregateID, "connections", n}, tracing.EventAttrs(ctx, ev)...)...)
	}
	return err
}

// Run runs the workers until ctx is done: whenever woken, and every
// PollInterval, they work through the due rows. An attempt interrupted by
// the shutdown hands its row back (due at once, the attempt not counted).
func (s *Syncer) Run(ctx context.Context) {
	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	var swept time.Time
	for {
		if time.Since(swept) >= s.cfg.CatchUpEvery {
			if n, err := s.CatchUp(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("cloud sync catch-up", "err", err)
			} else if n > 0 {
				s.log.Warn("cloud sync caught up on events its stream lost", "events", n)
			}
			swept = time.Now()
		}
		s.Drain(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.wake:
		}
	}
}

// Drain works through the rows due now with Config.Workers workers and
// returns when none is left (rows that failed and are due again later
// wait for the next Drain) or ctx is done. It returns how many attempts it
// made.
func (s *Syncer) Drain(ctx context.Context) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range s.cfg.Workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				rows, err := store.ClaimDueSyncs(ctx, s.db, s.cfg.Lease, 1)
				if err != nil {
					if ctx.Err() == nil {
						s.log.Warn("claim due cloud syncs", "err", err)
					}
					return
				}
				if len(rows) == 0 {
					return
				}
				s.attempt(ctx, rows[0])
				mu.Lock()
				total++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return total
}

// attempt makes one attempt at a claimed row and records its outcome.
func (s *Syncer) attempt(ctx context.Context, row store.CloudSync) {
	conn, err := store.CloudConnectionByID(ctx, s.db, row.ConnectionID, false)
	if errors.Is(err, store.ErrNotFound) {
		return // deleted meanwhile, and the row with it
	}
	if err != nil {
		s.release(ctx, row, err)
		return
	}
	secrets := s.conns.Secrets(conn)
	p, err := s.conns.Open(conn)
	if err != nil {
		s.failed(ctx, row, ErrorText(err, secrets...))
		return
	}
	switch row.Operation {
	case store.SyncCopy:
		err = s.copy(ctx, row, p)
	case store.SyncRemove:
		err = s.remove(ctx, row, p)
	default:
		err = fmt.Errorf("unknown operation %q", row.Operation)
	}
	if err != nil {
		if ctx.Err() != nil {
			s.release(ctx, row, err)
			return
		}
		s.failed(ctx, row, ErrorText(err, secrets...))
	}
}

// copy uploads the document to the row's remote key and records success.
// A document deleted before its copy was made gets no copy.
func (s *Syncer) copy(ctx context.Context, row store.CloudSync, p Provider) error {
	doc, err := store.GetDocument(ctx, s.db, row.DocumentID)
	if err != nil {
		return err
	}
	if doc.Status != store.StatusReady {
		return s.skipCopy(ctx, row)
	}
	obj, _, err := s.blobs.Open(ctx, doc.StorageKey)
	if err != nil {
		return fmt.Errorf("read %s from DocuVault's bucket: %w", doc.StorageKey, err)
	}
	defer obj.Close()
	etag, err := p.Put(ctx, row.RemoteKey, obj, doc.SizeBytes, doc.ContentType)
	if err != nil {
		return err
	}
	ctx, cancel := finishing(ctx)
	defer cancel()
	return s.commit(ctx, row, func(tx pgx.Tx, docStatus string, conn store.CloudConnection, cur store.CloudSync) ([]events.Envelope, error) {
		switch {
		case cur.Operation == store.SyncRemove:
			// Deleted while this copy was in flight, and the removal may
			// have run before the upload ended: remove once more.
			if cur.Status != store.SyncPending {
				cur.Attempts = 0
			}
			cur.Status, cur.NextAttemptAt = store.SyncPending, time.Now()
			return nil, store.UpdateCloudSync(ctx, tx, cur)
		case cur.Status != store.SyncPending:
			return nil, nil // another attempt finished it
		case docStatus == store.StatusDeleted && conn.DeleteRemote:
			// Deleted, and the removal was planned before this row existed.
			if err := toRemoval(ctx, tx, &cur); err != nil {
				return nil, err
			}
			return nil, store.UpdateCloudSync(ctx, tx, cur)
		}
		now := time.Now()
		cur.Status, cur.LastError, cur.SyncedAt, cur.ETag = store.SyncSynced, nil, &now, nullable(etag)
		if err := store.UpdateCloudSync(ctx, tx, cur); err != nil {
			return nil, err
		}
		after, err := store.MarkConnectionSynced(ctx, tx, conn.ID)
		if err != nil {
			return nil, err
		}
		ev, err := s.event(events.CloudSyncCompleted, cur, conn, events.CloudSync{ETag: etag, SizeBytes: doc.SizeBytes})
		if err != nil || conn.Status != store.ConnectionFailing || after.Status != store.ConnectionActive {
			return []events.Envelope{ev}, err
		}
		recovered, err := events.New(events.CloudConnectionRecovered, "cloud_connection", conn.ID, events.System, ev.CorrelationID, &ev,
			after.EventData())
		return []events.Envelope{ev, recovered}, err
	})
}

// skipCopy drops the pending copy of a document that is no longer ready
// (it was deleted): it becomes a removal where delete_remote asks for one
// (an earlier attempt may have uploaded before it died), and goes away
// elsewhere.
func (s *Syncer) skipCopy(ctx context.Context, row store.CloudSync) error {
	return s.commit(ctx, row, func(tx pgx.Tx, _ string, conn store.CloudConnection, cur store.CloudSync) ([]events.Envelope, error) {
		if cur.Operation != store.SyncCopy || cur.Status != store.SyncPending {
			return nil, nil
		}
		if !conn.DeleteRemote {
			return nil, store.DeleteCloudSync(ctx, tx, cur.DocumentID, cur.ConnectionID)
		}
		if err := toRemoval(ctx, tx, &cur); err != nil {
			return nil, err
		}
		return nil, store.UpdateCloudSync(ctx, tx, cur)
	})
}

// toRemoval turns the pending copy cur of a deleted document into a
// pending removal, due now, caused by the document's document.deleted
// (not by the document.finalized that planned the copy): the
// cloud_sync.removed or cloud_sync.failed it ends with names the
// deletion as its cause, keeps its correlation id and request id, and
// continues its trace, as when the deletion's handler plans the removal
// (store.ScheduleRemovals). Without that event in the audit log (rows
// from before events had ids) the row keeps its cause.
func toRemoval(ctx context.Context, tx pgx.Tx, cur *store.CloudSync) error {
	cur.Operation, cur.Status, cur.Attempts, cur.LastError, cur.NextAttemptAt = store.SyncRemove, store.SyncPending, 0, nil, time.Now()
	cause, corr, origin, err := store.DeletionCause(ctx, tx, cur.DocumentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	cur.CauseEventID, cur.CorrelationID, cur.RequestID, cur.Traceparent = &cause, corr, origin.RequestID, ""
	if origin.Traceparent != "" {
		cur.Traceparent = tracing.Child(origin.Traceparent)
	}
	return nil
}

// remove deletes the remote copy and records it.
func (s *Syncer) remove(ctx context.Context, row store.CloudSync, p Provider) error {
	if err := p.Delete(ctx, row.RemoteKey); err != nil {
		return err
	}
	ctx, cancel := finishing(ctx)
	defer cancel()
	return s.commit(ctx, row, func(tx pgx.Tx, _ string, conn store.CloudConnection, cur store.CloudSync) ([]events.Envelope, error) {
		// Only the claim this worker holds: a copy that finished meanwhile
		// re-armed the row (its object must go too) and moved
		// next_attempt_at.
		if !claimed(cur, row) {
			return nil, nil
		}
		cur.Status, cur.LastError = store.SyncRemoved, nil
		if err := store.UpdateCloudSync(ctx, tx, cur); err != nil {
			return nil, err
		}
		ev, err := s.event(events.CloudSyncRemoved, cur, conn, events.CloudSync{})
		return []events.Envelope{ev}, err
	})
}

// failed records a failed attempt: retried after the backoff, or, at the
// last attempt, failed for good with cloud_sync.failed and the connection
// marked failing. Only the worker's own claim is updated: a newer attempt
// in flight decides.
func (s *Syncer) failed(ctx context.Context, row store.CloudSync, msg string) {
	final := false
	err := s.commit(ctx, row, func(tx pgx.Tx, _ string, conn store.CloudConnection, cur store.CloudSync) ([]events.Envelope, error) {
		if !claimed(cur, row) {
			return nil, nil
		}
		cur.LastError = &msg
		if cur.Attempts < s.cfg.Retry.MaxAttempts {
			cur.NextAttemptAt = time.Now().Add(s.cfg.Retry.Delay(cur.Attempts))
			return nil, store.UpdateCloudSync(ctx, tx, cur)
		}
		final = true
		cur.Status = store.SyncFailed
		if err := store.UpdateCloudSync(ctx, tx, cur); err != nil {
			return nil, err
		}
		after, err := store.MarkConnectionFailing(ctx, tx, conn.ID, msg)
		if err != nil {
			return nil, err
		}
		ev, err := s.event(events.CloudSyncFailed, cur, conn, events.CloudSync{Error: msg})
		if err != nil || conn.Status != store.ConnectionActive || after.Status != store.ConnectionFailing {
			return []events.Envelope{ev}, err
		}
		failing, err := events.New(events.CloudConnectionFailing, "cloud_connection", conn.ID, events.System, ev.CorrelationID, &ev,
			events.CloudConnectionFailure{CloudConnection: after.EventData(), LastError: *after.LastError})
		return []events.Envelope{ev, failing}, err
	})
	log := s.log.With(append([]any{"document_id", row.DocumentID, "connection_id", row.ConnectionID, "operation", row.Operation,
		"attempt", row.Attempts, "err", msg}, rowAttrs(row)...)...)
	switch {
	case err != nil:
		log.Error("record failed cloud sync attempt", "record_err", err)
	case final:
		log.Error("cloud sync failed for good")
	default:
		log.Warn("cloud sync attempt failed; will retry")
	}
}

// release hands a claimed row back, due at once and the attempt not
// counted: it was interrupted (shutdown) rather than failed.
func (s *Syncer) release(ctx context.Context, row store.CloudSync, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := store.WithTx(ctx, s.db, func(tx pgx.Tx) error {
		cur, err := store.LockCloudSync(ctx, tx, row.DocumentID, row.ConnectionID)
		if err != nil || !claimed(cur, row) {
			return ignoreNotFound(err)
		}
		cur.Attempts = max(cur.Attempts-1, 0)
		cur.NextAttemptAt = time.Now()
		return store.UpdateCloudSync(ctx, tx, cur)
	})
	if err != nil {
		s.log.Warn("hand back cloud sync", append([]any{"document_id", row.DocumentID, "connection_id", row.ConnectionID, "err", err,
			"cause", cause}, rowAttrs(row)...)...)
	}
}

// commit runs decide in one transaction with the document row, the
// connection row and the sync row locked, in that order (the order every
// writer of these rows follows), and records the events decide returns
// (a cloud_sync event, and a cloud_connection event when the connection's
// status changed), with the row's request id and a span of its own under
// the row's trace. The document and connection locks put the events in
// commit order with the other events of their aggregates. A row or
// connection deleted meanwhile ends it quietly.
func (s *Syncer) commit(ctx context.Context, row store.CloudSync,
	decide func(tx pgx.Tx, docStatus string, conn store.CloudConnection, cur store.CloudSync) ([]events.Envelope, error)) error {
	wrote := false
	err := store.WithTx(ctx, s.db, func(tx pgx.Tx) error {
		docStatus, err := store.LockDocumentStatus(ctx, tx, row.DocumentID)
		if err != nil {
			return ignoreNotFound(err)
		}
		conn, err := store.CloudConnectionByID(ctx, tx, row.ConnectionID, true)
		if err != nil {
			return ignoreNotFound(err)
		}
		cur, err := store.LockCloudSync(ctx, tx, row.DocumentID, row.ConnectionID)
		if err != nil {
			return ignoreNotFound(err)
		}
		evs, err := decide(tx, docStatus, conn, cur)
		if err != nil || len(evs) == 0 {
			return err
		}
		wrote = true
		return store.RecordAll(ctx, tx, evs, store.Origin{RequestID: cur.RequestID, Traceparent: tracing.Child(cur.Traceparent)})
	})
	if err == nil && wrote {
		s.notify.Poke()
	}
	return err
}

// event builds a cloud_sync event about the row's document, caused by the
// event that asked for the operation.
func (s *Syncer) event(typ string, cur store.CloudSync, conn store.CloudConnection, data events.CloudSync) (events.Envelope, error) {
	data.DocumentID, data.ConnectionID, data.Provider = cur.DocumentID, cur.ConnectionID, conn.Provider
	data.Operation, data.RemoteKey, data.Attempts = cur.Operation, cur.RemoteKey, cur.Attempts
	var cause *events.Envelope
	corr := uuid.Must(uuid.NewV7())
	if cur.CorrelationID != nil {
		corr = *cur.CorrelationID
	}
	if cur.CauseEventID != nil {
		cause = &events.Envelope{ID: *cur.CauseEventID, CorrelationID: corr}
	}
	return events.New(typ, "document", cur.DocumentID, events.System, corr, cause, data)
}

// finishing is the context of recording an outcome once the remote work
// is done: a shutdown does not interrupt it (that would leave the row
// leased, and the work repeated after the lease), a dead database still
// bounds it.
func finishing(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// claimed reports whether cur is still the row a worker claimed as row:
// same operation, pending, and the lease it set.
func claimed(cur, row store.CloudSync) bool {
	return cur.Operation == row.Operation && cur.Status == store.SyncPending &&
		cur.Attempts == row.Attempts && cur.NextAttemptAt.Equal(row.NextAttemptAt)
}

// rowAttrs are the slog attributes that tie a log line about row to the
// event and request that planned it: cause_event_id, correlation_id,
// request_id and trace_id, those it has.
func rowAttrs(row store.CloudSync) []any {
	var attrs []any
	if row.CauseEventID != nil {
		attrs = append(attrs, "cause_event_id", row.CauseEventID.String())
	}
	if row.CorrelationID != nil {
		attrs = append(attrs, "correlation_id", row.CorrelationID.String())
	}
	if row.RequestID != "" {
		attrs = append(attrs, "request_id", row.RequestID)
	}
	if id := tracing.TraceIDOf(row.Traceparent); id != "" {
		attrs = append(attrs, "trace_id", id)
	}
	return attrs
}

func ignoreNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
