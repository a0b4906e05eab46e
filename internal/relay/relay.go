// Package relay publishes outbox rows to Redis Streams in Watermill's wire
// format, and marks them published only after Redis accepted them.
//
// Delivery is at least once: a relay that dies between XADD and the commit
// of "published" leaves the rows unpublished, and the next batch (of this or
// another relay) sends them again. Subscribers deduplicate by event id.
//
// Rows are chosen by "unpublished", never by an id high-water mark, so a
// transaction that commits after one with a higher id is still published.
// Several relays may run: each claims its batch with FOR UPDATE SKIP LOCKED,
// so no row is published by two relays at once.
package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

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

// Config tunes a Relay.
type Config struct {
	// BatchSize is how many rows one transaction claims (default 500).
	BatchSize int
	// PollInterval is the fallback wake-up when no notification arrives
	// (default 1 s): notifications are lost while the LISTEN connection is
	// down.
	PollInterval time.Duration
	// RetryDelay is the pause after a failed batch (default 500 ms).
	RetryDelay time.Duration
}

func (c Config) withDefaults() Config {
	c.BatchSize = cmp.Or(c.BatchSize, 500)
	c.PollInterval = cmp.Or(c.PollInterval, time.Second)
	c.RetryDelay = cmp.Or(c.RetryDelay, 500*time.Millisecond)
	return c
}

// Publisher sends a batch of outbox rows to their streams. It returns nil
// only when every row was accepted.
type Publisher interface {
	Publish(ctx context.Context, rows []store.OutboxRow) error
}

// Relay moves outbox rows to Redis Streams.
type Relay struct {
	cfg  Config
	log  *slog.Logger
	db   *pgxpool.Pool
	pub  Publisher
	wake chan struct{}
}

// New returns a Relay reading db and publishing with pub.
func New(cfg Config, log *slog.Logger, db *pgxpool.Pool, pub Publisher) *Relay {
	return &Relay{cfg: cfg.withDefaults(), log: log, db: db, pub: pub, wake: make(chan struct{}, 1)}
}

// Run publishes until ctx is cancelled. It wakes on NOTIFY from a dedicated
// connection (re-established after loss) and polls as a fallback. A batch
// in flight when ctx is cancelled is rolled back, never half-marked.
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

	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-poll.C:
		}
		// Drain: keep publishing while batches come back full.
		for {
			n, err := r.PublishBatch(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.log.Error("publish outbox batch", "err", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(r.cfg.RetryDelay):
				}
				continue
			}
			if n < r.cfg.BatchSize {
				break
			}
		}
		poll.Reset(r.cfg.PollInterval)
	}
}

// Wake makes Run look at the outbox now.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// PublishBatch claims up to BatchSize unpublished rows, publishes them and
// marks them published, in one transaction. It returns how many it
// published.
func (r *Relay) PublishBatch(ctx context.Context) (int, error) {
	var n int
	err := store.WithTx(ctx, r.db, func(tx pgx.Tx) error {
		// Marking rows published need not wait for the WAL flush: a mark
		// lost in a crash only makes the relay publish those rows again,
		// which at-least-once delivery allows. It spares the disk one flush
		// per batch, which upload commits would otherwise queue behind.
		if _, err := tx.Exec(ctx, `set local synchronous_commit = off`); err != nil {
			return err
		}
		rows, err := store.ClaimOutbox(ctx, tx, r.cfg.BatchSize)
		if err != nil || len(rows) == 0 {
			return err
		}
		if err := r.pub.Publish(ctx, rows); err != nil {
			return err
		}
		ids := make([]int64, len(rows))
		for i, row := range rows {
			ids[i] = row.ID
		}
		n = len(rows)
		return store.MarkPublished(ctx, tx, ids)
	})
	return n, err
}

// StreamPublisher publishes rows to Redis Streams with one pipelined round
// trip per batch, each row one XADD of a Watermill message: the event id is
// the message UUID, the envelope the payload, and the metadata carries the
// type, version, correlation id and aggregate id.
type StreamPublisher struct {
	Redis redis.UniversalClient
}

var marshaller = redisstream.DefaultMarshallerUnmarshaller{}

// Message is the Watermill message for an outbox row.
func Message(row store.OutboxRow) *message.Message {
	msg := message.NewMessage(row.EventID.String(), row.Payload)
	msg.Metadata.Set(events.MetaType, row.EventType)
	msg.Metadata.Set(events.MetaVersion, "1")
	msg.Metadata.Set(events.MetaAggregateID, row.AggregateID.String())
	if row.CorrelationID != nil {
		msg.Metadata.Set(events.MetaCorrelationID, row.CorrelationID.String())
	}
	return msg
}

// Publish sends rows in one pipeline and fails if Redis refused any.
func (p StreamPublisher) Publish(ctx context.Context, rows []store.OutboxRow) error {
	pipe := p.Redis.Pipeline()
	cmds := make([]*redis.StringCmd, len(rows))
	for i, row := range rows {
		values, err := marshaller.Marshal(row.Stream, Message(row))
		if err != nil {
			return fmt.Errorf("marshal event %s: %w", row.EventID, err)
		}
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: row.Stream, Values: values})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		var errs []error
		for i, c := range cmds {
			if c.Err() != nil {
				errs = append(errs, fmt.Errorf("xadd %s to %s: %w", rows[i].EventID, rows[i].Stream, c.Err()))
			}
		}
		return errors.Join(append(errs, err)...)
	}
	return nil
}
