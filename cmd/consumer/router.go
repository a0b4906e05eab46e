package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
)

// finalizeWorkers is how many documents one consumer process finalises
// concurrently.
const finalizeWorkers = 4

// DeadLetterStream receives messages that failed every retry, or can never
// be handled, with the failure in their metadata.
const DeadLetterStream = "docuvault.dead_letter"

// consumerName is this process's name in the consumer groups. It is stable
// across restarts (host name and metrics port) rather than random per
// start, so dead names do not pile up in the group and an operator sees
// which host holds which pending entries. Entries a killed process left
// pending are claimed by any live consumer once idle for MaxIdleTime.
func consumerName(metricsAddr string) string {
	host, _ := os.Hostname()
	if _, port, err := net.SplitHostPort(metricsAddr); err == nil && port != "0" {
		return host + "-" + port
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// newRouter wires the consumer's handlers: one consumer group per concern,
// each with retries, panic recovery and a dead-letter path. Each subscriber
// and the dead-letter publisher get their own Redis client: closing a
// Watermill redisstream subscriber closes its client.
func newRouter(log *slog.Logger, redisOpts *redis.Options, name string, fin *finalize.Finalizer) (*message.Router, error) {
	wlog := watermill.NewSlogLogger(log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: redis.NewClient(redisOpts)}, wlog)
	if err != nil {
		return nil, err
	}
	poison, err := middleware.PoisonQueue(pub, DeadLetterStream)
	if err != nil {
		return nil, err
	}
	router.AddMiddleware(
		poison,
		middleware.Retry{
			MaxRetries:      6,
			InitialInterval: 200 * time.Millisecond,
			MaxInterval:     5 * time.Second,
			Multiplier:      2,
			Logger:          wlog,
			ShouldRetry: func(p middleware.RetryParams) bool {
				return !errors.Is(p.Err, finalize.ErrMalformed)
			},
		}.Middleware,
		middleware.Recoverer,
	)

	// Each worker is one subscriber in the group, so up to finalizeWorkers
	// documents are finalised at once (a Watermill subscription handles one
	// message at a time).
	for w := range finalizeWorkers {
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
			Client:        redis.NewClient(redisOpts),
			ConsumerGroup: finalize.ConsumerName,
			Consumer:      fmt.Sprintf("%s-%d", name, w),
			// A message idle this long in another consumer's pending list is
			// taken over: that consumer died mid-handling. Well above the
			// retries' total backoff and the time to verify a large file.
			MaxIdleTime:                   60 * time.Second,
			ClaimInterval:                 5 * time.Second,
			NackResendSleep:               500 * time.Millisecond,
			DisableIndefiniteInitialBlock: true,
			// The group is created when subscribing; after Redis lost it
			// (restarted empty) every read fails with NOGROUP and the
			// subscriber would retry forever. Stop instead: run exits
			// non-zero and the restarted process re-creates the group.
			ShouldStopOnReadErrors: func(err error) bool {
				return strings.HasPrefix(err.Error(), "NOGROUP")
			},
		}, wlog)
		if err != nil {
			return nil, err
		}
		router.AddConsumerHandler(fmt.Sprintf("finalize-%d", w), events.StreamDocuments, sub, fin.Handle)
	}
	return router, nil
}
