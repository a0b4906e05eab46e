// Package relay publishes outbox rows to Redis Streams in Watermill's wire
// format, and deletes them only after Redis accepted them.
//
// Delivery is at least once: a relay that dies between XADD and its commit
// leaves the rows in the outbox, and the next batch sends them again.
// Subscribers deduplicate by event id.
//
// Rows are taken by presence in the outbox, never by an id high-water mark
// alone, so a transaction that commits after one with a higher id is still
// published (see cursor).
//
// Several relays may run: they elect one leader with a PostgreSQL advisory
// lock held by a dedicated connection, and only the leader publishes, on
// that same connection. The lock lives exactly as long as the connection,
// so a leader that dies (even by SIGKILL) releases it, and a standby takes
// over within Config.LeaseRetry. Publishing on the lock's connection fences
// a leader that lost its connection: its transaction fails with it.
//
// Ordering: events of one aggregate reach their stream in commit order.
// Every writer locks the aggregate's row before it inserts the event, so
// the events of one aggregate get outbox ids in commit order; the single
// leader publishes in id order and a batch is all or nothing. docs/events.md
// states the guarantee; relay_test.go proves it under concurrent writers.
package relay

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgxlisten"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

// LeaderLock is the advisory lock key the leader holds (in its database;
// advisory locks are per database).
const LeaderLock int64 = 0x646f637576617574 // "docuvaut"

// Config tunes a Relay.
type Config struct {
	// BatchSize is how many rows one transaction takes (default 1000).
	BatchSize int
	// PollInterval is the fallback wake-up when no notification arrives
	// (default 1 s): notifications are lost while the LISTEN connection is
	// down, and a writer may die between its commit and its NOTIFY.
	PollInterval time.Duration
	// LeaseRetry is how often a standby tries to become the leader
	// (default 1 s).
	LeaseRetry time.Duration
	// MinBackoff and MaxBackoff bound the exponential pause after a failed
	// batch or connection (defaults 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// ShutdownTimeout is how long the batch in flight may still take once
	// Run is asked to stop (default 10 s).
	ShutdownTimeout time.Duration
	// FullScanEvery is how often the leader scans the outbox from its
	// lowest id as a safety net (default 10 s); see cursor.
	FullScanEvery time.Duration
	// Trim decides when stream entries are removed; see TrimConfig.
	Trim TrimConfig
	// Metrics, when not nil, receives the relay's measurements.
	Metrics *Metrics
}

func (c Config) withDefaults() Config {
	c.BatchSize = cmp.Or(c.BatchSize, 1000)
	c.PollInterval = cmp.Or(c.PollInterval, time.Second)
	c.LeaseRetry = cmp.Or(c.LeaseRetry, time.Second)
	c.MinBackoff = cmp.Or(c.MinBackoff, 100*time.Millisecond)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, 5*time.Second)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 10*time.Second)
	c.FullScanEvery = cmp.Or(c.FullScanEvery, 10*time.Second)
	c.Trim = c.Trim.withDefaults()
	return c
}

// Publisher sends a batch of outbox rows to their streams. It returns nil
// only when every row was accepted.
type Publisher interface {
	Publish(ctx context.Context, rows []store.OutboxRow) error
}

// Relay moves outbox rows to Redis Streams.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	db      *pgxpool.Pool
	pub     Publisher
	trimmer *Trimmer
	wake    chan struct{}
}

// New returns a Relay reading db and publishing with pub. When pub is a
// StreamPublisher, the leader also trims the streams (see TrimConfig).
func New(cfg Config, log *slog.Logger, db *pgxpool.Pool, pub Publisher) *Relay {
	r := &Relay{cfg: cfg.withDefaults(), log: log, db: db, pub: pub, wake: make(chan struct{}, 1)}
	if sp, ok := pub.(StreamPublisher); ok && sp.Redis != nil {
		r.trimmer = &Trimmer{Redis: sp.Redis, Config: r.cfg.Trim, Log: log, Metrics: r.cfg.Metrics}
	}
	return r
}

// Run relays until ctx is cancelled: it competes for leadership and, while
// it leads, publishes. It wakes on NOTIFY from a dedicated connection
// (re-established after loss) and polls as a fallback. When ctx is
// cancelled, the batch in flight is finished and committed (within
// ShutdownTimeout) and leadership is released before Run returns nil.
func (r *Relay) Run(ctx context.Context) error {
	listener := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.ConnectConfig(ctx, r.db.Config().ConnConfig)
		},
		LogError: func(_ context.Context, err error) {
			if ctx.Err() == nil {
				r.log.Warn("outbox listener", "err", err)
			}
		},
		ReconnectDelay: 2 * time.Second,
	}
	listener.Handle(store.OutboxChannel, pgxlisten.HandlerFunc(func(context.Context, *pgconn.Notification, *pgx.Conn) error {
		r.Wake()
		return nil
	}))
	listenDone := make(chan struct{})
	go func() {
		defer close(listenDone)
		_ = listener.Listen(ctx)
	}()
	defer func() { <-listenDone }()

	backoff := r.newBackoff()
	for ctx.Err() == nil {
		conn, err := r.acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			r.log.Warn("relay leadership", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		r.log.Info("leading: publishing the outbox")
		r.cfg.Metrics.setLeader(true)
		err = r.lead(ctx, conn)
		r.cfg.Metrics.setLeader(false)
		r.release(conn)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("lost leadership", "err", err)
			backoff.wait(ctx)
		}
	}
	return nil
}

// Wake makes the leader look at the outbox now.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// acquire connects and waits until this connection holds the leader lock.
// The connection does not wait for the WAL flush on commit: a delete lost
// in a database crash only makes the relay publish those rows again, which
// at-least-once delivery allows, and it spares the disk one flush per batch
// that upload commits would otherwise queue behind.
func (r *Relay) acquire(ctx context.Context) (*pgx.Conn, error) {
	return holdLock(ctx, r.db, LeaderLock, r.cfg.LeaseRetry, "docuvault-relay", func() {
		r.log.Info("standby: another relay leads")
	})
}

// release gives the lock back and closes the leader's connection.
func (r *Relay) release(conn *pgx.Conn) { releaseLock(conn, LeaderLock) }

// lead publishes on conn until ctx is cancelled (nil) or conn fails.
func (r *Relay) lead(ctx context.Context, conn *pgx.Conn) error {
	poll := time.NewTimer(0)
	defer poll.Stop()
	backoff := r.newBackoff()
	cur := newCursor(r.cfg.FullScanEvery)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-poll.C:
		}
		// Drain: keep publishing while batches come back full or a rescan
		// is due.
		for ctx.Err() == nil {
			from := cur.next(time.Now())
			rows, xid, xmin, err := r.publishBatch(ctx, conn, from)
			if err != nil {
				if conn.IsClosed() {
					return err
				}
				if ctx.Err() != nil {
					return nil
				}
				r.log.Error("publish outbox batch", "err", err)
				backoff.wait(ctx)
				// A connection that no longer answers cannot hold the lock.
				pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				perr := conn.Ping(pingCtx)
				cancel()
				if perr != nil && ctx.Err() == nil {
					return fmt.Errorf("leader connection: %w", perr)
				}
				continue
			}
			backoff.reset()
			cur.observe(time.Now(), from, rows, xid, xmin, r.cfg.BatchSize)
			if !cur.more() {
				break
			}
		}
		if r.trimmer != nil && ctx.Err() == nil {
			r.trimmer.MaybeTrim(ctx)
		}
		poll.Reset(r.cfg.PollInterval)
	}
}

// PublishBatch publishes one batch, from the lowest id, on a connection
// from the pool and outside the leader election: for tests and one-off
// tools. Run is how the outbox is relayed.
func (r *Relay) PublishBatch(ctx context.Context) (int, error) {
	conn, err := r.db.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	rows, _, _, err := r.publishBatch(ctx, conn.Conn(), 0)
	return len(rows), err
}

// publishBatch takes up to BatchSize rows with ids above after, publishes
// them and commits their removal, in one transaction on conn; it also
// returns the transaction's id and its snapshot's xmin (see cursor). Once
// started, a batch is finished even if ctx is cancelled (within
// ShutdownTimeout), so a stopping relay records what it sent and a restart
// sends nothing twice.
func (r *Relay) publishBatch(ctx context.Context, conn *pgx.Conn, after int64) ([]store.OutboxRow, uint64, uint64, error) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ShutdownTimeout)
	defer cancel()
	var rows []store.OutboxRow
	var xid, xmin uint64
	err := pgx.BeginFunc(bctx, conn, func(tx pgx.Tx) error {
		var err error
		rows, xid, xmin, err = store.TakeOutbox(bctx, tx, after, r.cfg.BatchSize)
		if err != nil || len(rows) == 0 {
			return err
		}
		start := time.Now()
		if err := r.pub.Publish(bctx, rows); err != nil {
			return err
		}
		r.cfg.Metrics.published(rows, time.Since(start))
		return nil
	})
	if err != nil {
		r.cfg.Metrics.failed()
		return nil, 0, 0, err
	}
	r.cfg.Metrics.committed(rows)
	if r.trimmer != nil {
		for _, row := range rows {
			r.trimmer.Track(row.Stream)
		}
	}
	return rows, xid, xmin, nil
}

// backoff is an exponential pause between MinBackoff and MaxBackoff.
type backoff struct {
	min, max, next time.Duration
}

func (r *Relay) newBackoff() *backoff {
	return &backoff{min: r.cfg.MinBackoff, max: r.cfg.MaxBackoff, next: r.cfg.MinBackoff}
}

func (b *backoff) reset() { b.next = b.min }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.next)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.next = min(2*b.next, b.max)
}

// StreamPublisher publishes rows to Redis Streams with one pipelined round
// trip per batch, each row one XADD of a Watermill message to its stream
// and one to the audit stream: the event id is the message UUID, the
// envelope the payload, and the metadata carries the type, version,
// correlation id, aggregate id, request id and traceparent (and, on the
// audit stream only, the client IP and user agent).
type StreamPublisher struct {
	Redis redis.UniversalClient
}

var marshaller = redisstream.DefaultMarshallerUnmarshaller{}

// Message is the Watermill message for an outbox row.
func Message(row store.OutboxRow) *message.Message {
	msg := message.NewMessage(row.EventID.String(), row.Payload)
	msg.Metadata.Set(events.MetaType, row.EventType)
	msg.Metadata.Set(events.MetaVersion, strconv.Itoa(cmp.Or(row.Version, events.Version)))
	msg.Metadata.Set(events.MetaAggregateID, row.AggregateID.String())
	if row.CorrelationID != nil {
		msg.Metadata.Set(events.MetaCorrelationID, row.CorrelationID.String())
	}
	if row.RequestID != "" {
		msg.Metadata.Set(events.MetaRequestID, row.RequestID)
	}
	if row.Traceparent != "" {
		msg.Metadata.Set(events.MetaTraceparent, row.Traceparent)
	}
	return msg
}

// AuditMessage is the audit stream's message for an outbox row: the event's
// message with the client IP and user agent it came from in the metadata.
func AuditMessage(row store.OutboxRow) *message.Message {
	msg := Message(row)
	if row.ClientIP != "" {
		msg.Metadata.Set(events.MetaClientIP, row.ClientIP)
	}
	if row.UserAgent != "" {
		msg.Metadata.Set(events.MetaUserAgent, row.UserAgent)
	}
	return msg
}

// Publish sends rows in one pipeline, each to its stream and to the audit
// stream, and fails if Redis refused any.
func (p StreamPublisher) Publish(ctx context.Context, rows []store.OutboxRow) error {
	entries := make([]Entry, 2*len(rows))
	for i, row := range rows {
		msg := Message(row)
		// The same message, encoded once, unless the audit stream's has
		// more metadata: the pipeline's events (no client) share it.
		audit := msg
		if row.ClientIP != "" || row.UserAgent != "" {
			audit = AuditMessage(row)
		}
		entries[i] = Entry{Stream: row.Stream, Message: msg}
		entries[len(rows)+i] = Entry{Stream: events.StreamAudit, Message: audit}
	}
	wp := WatermillPublisher{client: p.Redis, marshaller: marshaller, logger: watermill.NopLogger{}}
	return wp.PublishEntries(ctx, entries)
}
