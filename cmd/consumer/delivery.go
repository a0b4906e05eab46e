package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/streamsub"
)

// Delivery settings shared by every subscriber of the consumer.
const (
	// claimIdle is how long a pending entry must sit before it may be
	// claimed at all; whether it is claimed then depends on its owner's
	// liveness (see liveness.shouldClaim), not on the time alone.
	claimIdle = 5 * time.Second
	// DefaultClaimAfter is CLAIM_AFTER unless set: how long a consumer
	// counts as alive after its last heartbeat (they go every third of
	// it), so how soon the entries of a dead consumer are claimed.
	DefaultClaimAfter = 15 * time.Second
)

// liveness publishes that this process's consumers are alive, and tells
// whether another consumer is, so that entries pending with a consumer
// that died are claimed quickly (within ttl, CLAIM_AFTER, plus a claim
// interval) while a slow but live handler's entry is never taken from it,
// however long it runs. A restarted process uses the same consumer names:
// its subscribers hand out the entries its previous run left pending
// first (streamsub).
type liveness struct {
	ttl     time.Duration
	rdb     *redis.Client
	log     *slog.Logger
	started time.Time
	names   []string
}

func aliveKey(consumer string) string { return "docuvault:consumer-alive:" + consumer }

// run refreshes this process's heartbeats until ctx ends, then removes
// them (a clean stop hands its entries over at once).
func (l *liveness) run(ctx context.Context) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		pipe := l.rdb.Pipeline()
		for _, n := range l.names {
			pipe.Set(ctx, aliveKey(n), l.started.UTC().Format(time.RFC3339Nano), l.ttl)
		}
		if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("consumer heartbeat", "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			keys := make([]string, len(l.names))
			for i, n := range l.names {
				keys[i] = aliveKey(n)
			}
			_ = l.rdb.Del(dctx, keys...).Err()
			cancel()
			return
		case <-t.C:
		}
	}
}

// shouldClaim decides for an entry pending with another consumer, idle
// for at least claimIdle, whether to take it over: only when that
// consumer has no heartbeat.
func (l *liveness) shouldClaim() func(redis.XPendingExt) bool {
	return func(xp redis.XPendingExt) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := l.rdb.Exists(ctx, aliveKey(xp.Consumer)).Result()
		return err == nil && n == 0
	}
}

// subscriberConfig is the configuration of the subscriber of consumer in
// group, handing out up to concurrency messages at once. lost is set when
// a read fails with NOGROUP (Redis lost the group: restarted empty), which
// ends the subscription so that the consumer re-creates its router.
func subscriberConfig(redisOpts *redis.Options, group, consumer string, concurrency int, live *liveness, lost *atomic.Bool, log *slog.Logger) streamsub.Config {
	return streamsub.Config{
		Client:   redis.NewClient(redisOpts),
		Group:    group,
		Consumer: consumer,
		// An entry that cannot be decoded becomes a message the malformed
		// middleware sends to the dead letters.
		Unmarshaller:    tolerantUnmarshaller{},
		Concurrency:     concurrency,
		Prefetch:        max(concurrency, 32),
		MinIdle:         claimIdle,
		ClaimInterval:   claimIdle,
		ShouldClaim:     live.shouldClaim(),
		NackResendSleep: 500 * time.Millisecond,
		ShouldStop: func(err error) bool {
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				lost.Store(true)
				return true
			}
			return false
		},
		Logger: log,
	}
}

// malformedKey marks a message whose stream entry could not be decoded.
const malformedKey = "docuvault_malformed"

// tolerantUnmarshaller decodes Watermill's wire format, and turns an entry
// it cannot decode into a message carrying the entry's fields as payload
// and the decoding error in its metadata.
type tolerantUnmarshaller struct{}

func (tolerantUnmarshaller) Unmarshal(values map[string]any) (*message.Message, error) {
	msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
	if err == nil {
		return msg, nil
	}
	id, _ := values[redisstream.UUIDHeaderKey].(string)
	if id == "" {
		id = watermill.NewUUID()
	}
	raw, _ := json.Marshal(values)
	bad := message.NewMessage(id, raw)
	bad.Metadata.Set(malformedKey, err.Error())
	return bad, nil
}

// rejectMalformed fails a malformed message at once with ErrMalformed, so
// it goes to the dead letters with the reason, without retries.
func rejectMalformed(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if reason := msg.Metadata.Get(malformedKey); reason != "" {
			return nil, fmt.Errorf("%w: stream entry is not a Watermill message: %s", finalize.ErrMalformed, reason)
		}
		return h(msg)
	}
}
