package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// ErrPublisherClosed is returned by a WatermillPublisher after Close.
var ErrPublisherClosed = errors.New("relay: watermill publisher closed")

// WatermillPublisherConfig configures a WatermillPublisher.
type WatermillPublisherConfig struct {
	// Marshaller turns a message into the fields of a stream entry
	// (default redisstream.DefaultMarshallerUnmarshaller: Watermill's wire
	// format, read unchanged by redisstream.Subscriber).
	Marshaller redisstream.Marshaller
	// Logger receives trace logs of each pipeline (default: none).
	Logger watermill.LoggerAdapter
	// CloseClient makes Close close the Redis client too. Leave it false
	// when the client is shared.
	CloseClient bool
}

// Entry is one message bound for a stream.
type Entry struct {
	Stream  string
	Message *message.Message
}

// WatermillPublisher is a Watermill message.Publisher for Redis Streams
// that sends all messages of one call in one pipelined round trip, one
// XADD per message, where redisstream.Publisher waits for each XADD in
// turn. Entries are byte-compatible with redisstream.Publisher's (with the
// default marshaller), so redisstream.Subscriber reads them unchanged.
//
// What it guarantees:
//
//   - Order within a call: the XADDs go out on one connection in slice
//     order and Redis runs them in that order, so each stream receives the
//     call's messages in call order (with a single-node client; a Cluster
//     client splits the pipeline by node, and re-sends redirected commands
//     during slot migration, which can reorder them).
//   - Order across sequential calls: a call returns only after Redis
//     answered every XADD, so a call that starts after another returned
//     lands after it. Concurrent calls are not ordered and may interleave.
//   - A nil error means Redis accepted every XADD. Durability beyond that
//     is Redis's: its persistence settings, and asynchronous replication
//     that can lose acknowledged writes on failover.
//
// What it does not guarantee:
//
//   - Atomicity: a call is not a transaction. On error any subset of its
//     entries may have been appended (a refused XADD fails alone, a broken
//     connection fails the rest); the error names every failed entry, and
//     the caller must retry the whole call, duplicating the others.
//   - Exactly once: XADD has no idempotency key (entry ids are generated
//     by Redis), and go-redis retries a pipeline after a network error
//     (Options.MaxRetries), so an entry may be appended twice even by a
//     call that returns nil. Delivery is at least once; consumers
//     deduplicate by message UUID.
//   - Bounded streams: entries are never trimmed (no MAXLEN, unlike
//     redisstream.PublisherConfig.Maxlens).
//   - Context: Publish does not consult or carry the messages' contexts;
//     its calls are bounded by the client's read and write timeouts.
//
// What consumers get is redisstream.Subscriber's to give: in a consumer
// group, at-least-once delivery (an unacked message is claimed by another
// consumer after MaxIdleTime) and stream order only for a single consumer
// that acks within MaxIdleTime. pubsub_test.go runs Watermill's universal
// Pub/Sub tests with the same Features watermill-redisstream declares for
// its own publisher.
//
// A WatermillPublisher is safe for concurrent use. Close waits for calls in
// flight; calls after it return ErrPublisherClosed.
type WatermillPublisher struct {
	client     redis.UniversalClient
	marshaller redisstream.Marshaller
	logger     watermill.LoggerAdapter
	closeCl    bool

	// mu is held shared by each call and exclusively by Close, so Close
	// waits for calls in flight and no call starts after it.
	mu     sync.RWMutex
	closed bool
}

var _ message.Publisher = (*WatermillPublisher)(nil)

// NewWatermillPublisher returns a publisher sending through client.
func NewWatermillPublisher(client redis.UniversalClient, cfg WatermillPublisherConfig) (*WatermillPublisher, error) {
	if client == nil {
		return nil, errors.New("relay: watermill publisher: redis client is nil")
	}
	p := &WatermillPublisher{
		client:     client,
		marshaller: cfg.Marshaller,
		logger:     cfg.Logger,
		closeCl:    cfg.CloseClient,
	}
	if p.marshaller == nil {
		p.marshaller = redisstream.DefaultMarshallerUnmarshaller{}
	}
	if p.logger == nil {
		p.logger = watermill.NopLogger{}
	}
	return p, nil
}

// Publish appends messages to the stream topic, in order, in one round
// trip. It implements message.Publisher.
func (p *WatermillPublisher) Publish(topic string, messages ...*message.Message) error {
	entries := make([]Entry, len(messages))
	for i, msg := range messages {
		entries[i] = Entry{Stream: topic, Message: msg}
	}
	return p.PublishEntries(context.Background(), entries)
}

// PublishEntries appends each entry's message to its stream, in slice
// order, in one pipeline. It returns nil only if Redis accepted every
// XADD; otherwise the error joins one error per failed entry. A message
// that cannot be marshalled fails the call before anything is sent.
func (p *WatermillPublisher) PublishEntries(ctx context.Context, entries []Entry) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrPublisherClosed
	}
	if len(entries) == 0 {
		return nil
	}

	values := make([]map[string]any, len(entries))
	// The default marshaller ignores the stream, so a message sent to two
	// streams (the relay's event and audit entries) is encoded once.
	_, reuse := p.marshaller.(redisstream.DefaultMarshallerUnmarshaller)
	var encoded map[*message.Message]map[string]any
	if reuse {
		encoded = make(map[*message.Message]map[string]any, len(entries))
	}
	for i, e := range entries {
		if e.Message == nil {
			return fmt.Errorf("entry %d for stream %s: nil message", i, e.Stream)
		}
		if v, ok := encoded[e.Message]; ok {
			values[i] = v
			continue
		}
		v, err := p.marshaller.Marshal(e.Stream, e.Message)
		if err != nil {
			return fmt.Errorf("marshal message %s for stream %s: %w", e.Message.UUID, e.Stream, err)
		}
		values[i] = v
		if reuse {
			encoded[e.Message] = v
		}
	}

	fields := watermill.LogFields{"entries": len(entries)}
	p.logger.Trace("Sending messages to redis streams", fields)
	pipe := p.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(entries))
	for i, e := range entries {
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: e.Stream, Values: values[i]})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		var errs []error
		for i, c := range cmds {
			if c.Err() != nil {
				errs = append(errs, fmt.Errorf("xadd message %s to stream %s: %w", entries[i].Message.UUID, entries[i].Stream, c.Err()))
			}
		}
		if len(errs) == 0 {
			// Not expected (go-redis marks the commands of a failed
			// pipeline), but never report success for a failed Exec.
			errs = append(errs, fmt.Errorf("xadd pipeline of %d messages: %w", len(entries), err))
		}
		return errors.Join(errs...)
	}
	p.logger.Trace("Messages sent to redis streams", fields)
	return nil
}

// Close stops the publisher after the calls in flight, and closes the
// Redis client if the config asked for it. Closing again does nothing.
func (p *WatermillPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.closeCl {
		return p.client.Close()
	}
	return nil
}
